-- Named queries of the Postgres result backend (stemrun.backends.postgres). `{ns}` is the
-- namespace; loaded by stemrun.sql_db. Tables live in the connection's schema (its search_path). A
-- status record is stored whole as JSON in `data` (type json keeps the exact text, so a record
-- reads back byte for byte); `state`, `attempt` and `expires_at` are copies kept as columns so they
-- can be indexed and filtered without parsing. Times are epoch seconds passed in by the caller's
-- clock, never the server's now(), so every process and every test clock agree.
-- Batches travel as parallel arrays expanded with unnest(), one per column and named after it:
-- one statement per batch.

-- name: schema
CREATE TABLE IF NOT EXISTS {ns}_status (
    id text PRIMARY KEY,
    state text NOT NULL,
    attempt integer NOT NULL,
    expires_at double precision,
    data json NOT NULL
);
CREATE INDEX IF NOT EXISTS {ns}_status_state ON {ns}_status (state);
CREATE INDEX IF NOT EXISTS {ns}_status_expires
    ON {ns}_status (expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS {ns}_workers (
    id text PRIMARY KEY,
    info json NOT NULL,
    expires_at double precision NOT NULL
);
CREATE TABLE IF NOT EXISTS {ns}_chords (
    chord_id text NOT NULL,
    idx integer NOT NULL,
    result json NOT NULL,
    expires_at double precision NOT NULL,
    PRIMARY KEY (chord_id, idx)
);
CREATE INDEX IF NOT EXISTS {ns}_chords_expires ON {ns}_chords (expires_at);
CREATE TABLE IF NOT EXISTS {ns}_counters (
    name text PRIMARY KEY,
    value bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS {ns}_rates (
    key text PRIMARY KEY,
    tat double precision NOT NULL
);
CREATE INDEX IF NOT EXISTS {ns}_rates_tat ON {ns}_rates (tat);
CREATE TABLE IF NOT EXISTS {ns}_uniques (
    key text PRIMARY KEY,
    holder text NOT NULL,
    expires_at double precision NOT NULL
);
CREATE INDEX IF NOT EXISTS {ns}_uniques_expires ON {ns}_uniques (expires_at);
CREATE TABLE IF NOT EXISTS {ns}_paused (
    queue text PRIMARY KEY,
    paused_at double precision NOT NULL
);
CREATE TABLE IF NOT EXISTS {ns}_outbox (
    id text PRIMARY KEY,
    since double precision NOT NULL,
    message bytea NOT NULL
);
CREATE INDEX IF NOT EXISTS {ns}_outbox_since ON {ns}_outbox (since);

-- name: create
-- Insert-if-absent for a batch of distinct ids; an expired record counts as absent and is
-- overwritten. RETURNING names the ids that were written.
INSERT INTO {ns}_status AS s (id, state, attempt, expires_at, data)
SELECT * FROM unnest(
    %(id)s::text[], %(state)s::text[], %(attempt)s::integer[],
    %(expires_at)s::double precision[], %(data)s::json[]
)
ON CONFLICT (id) DO UPDATE SET
    state = excluded.state,
    attempt = excluded.attempt,
    expires_at = excluded.expires_at,
    data = excluded.data
WHERE s.expires_at < %(now)s
RETURNING id;

-- name: get
SELECT data::text FROM {ns}_status
WHERE id = %(id)s AND (expires_at IS NULL OR expires_at >= %(now)s);

-- name: list
-- Newest first; a NULL filter matches every record (the dashboard's task list).
SELECT data::text FROM {ns}_status
WHERE (expires_at IS NULL OR expires_at >= %(now)s)
    AND (%(state)s::text IS NULL OR state = %(state)s)
    AND (%(task)s::text IS NULL OR data->>'task' = %(task)s)
    AND (%(queue)s::text IS NULL OR data->>'queue' = %(queue)s)
ORDER BY (data->>'created_at')::double precision DESC, id
LIMIT %(limit)s OFFSET %(offset)s;

-- name: lock_live
-- The live records of a batch, locked until commit. ORDER BY makes every batch take its row
-- locks in the same order, so two racing batches queue up instead of deadlocking.
SELECT data::text FROM {ns}_status
WHERE id = ANY(%(ids)s::text[]) AND (expires_at IS NULL OR expires_at >= %(now)s)
ORDER BY id
FOR UPDATE;

-- name: update_many
UPDATE {ns}_status AS s SET
    state = u.state,
    attempt = u.attempt,
    expires_at = u.expires_at,
    data = u.data
FROM unnest(
    %(id)s::text[], %(state)s::text[], %(attempt)s::integer[],
    %(expires_at)s::double precision[], %(data)s::json[]
) AS u (id, state, attempt, expires_at, data)
WHERE s.id = u.id;

-- name: upsert
INSERT INTO {ns}_status (id, state, attempt, expires_at, data)
VALUES (%(id)s, %(state)s, %(attempt)s, %(expires_at)s, %(data)s::json)
ON CONFLICT (id) DO UPDATE SET
    state = excluded.state,
    attempt = excluded.attempt,
    expires_at = excluded.expires_at,
    data = excluded.data;

-- name: delete
DELETE FROM {ns}_status WHERE id = ANY(%(ids)s::text[]);

-- name: purge_expired
DELETE FROM {ns}_status WHERE expires_at < %(now)s;

-- name: purge_expired_workers
DELETE FROM {ns}_workers WHERE expires_at < %(now)s;

-- name: put_worker
INSERT INTO {ns}_workers (id, info, expires_at)
VALUES (%(id)s, %(info)s::json, %(expires_at)s)
ON CONFLICT (id) DO UPDATE SET info = excluded.info, expires_at = excluded.expires_at;

-- name: workers
SELECT info::text FROM {ns}_workers WHERE expires_at >= %(now)s ORDER BY id;

-- name: remove_worker
DELETE FROM {ns}_workers WHERE id = %(id)s;

-- name: chord_add
-- The first result of a member index wins; a repeat changes nothing.
INSERT INTO {ns}_chords (chord_id, idx, result, expires_at)
VALUES (%(chord_id)s, %(idx)s, %(result)s::json, %(expires_at)s)
ON CONFLICT (chord_id, idx) DO NOTHING;

-- name: chord_count
SELECT count(*) FROM {ns}_chords WHERE chord_id = %(chord_id)s;

-- name: chord_results
SELECT result::text FROM {ns}_chords WHERE chord_id = %(chord_id)s ORDER BY idx;

-- name: purge_expired_chords
DELETE FROM {ns}_chords WHERE expires_at < %(now)s;

-- name: incr_counters
-- Atomic add of a batch (names sorted by the caller): concurrent workers never lose an increment.
INSERT INTO {ns}_counters AS c (name, value)
SELECT * FROM unnest(%(name)s::text[], %(value)s::bigint[])
ON CONFLICT (name) DO UPDATE SET value = c.value + excluded.value;

-- name: counters
SELECT name, value FROM {ns}_counters;

-- name: lock
-- A transaction-scoped advisory lock on one name (taken in sorted order by the caller): members
-- of one chord completing at once take turns, so each one's count sees the others' committed rows
-- and exactly one first-time add finds the chord complete; racing workers and producers on one
-- rate limiter or unique key take turns too.
SELECT pg_advisory_xact_lock(hashtext(%(lock)s));

-- Flow control (stemrun.flow, docs/flow-control.md). A rate row whose slot has passed, or a unique
-- row whose TTL has passed, means the same as no row; the purges skip rows another transaction
-- holds.

-- name: rate_get
SELECT key, tat FROM {ns}_rates WHERE key = ANY(%(keys)s::text[]);

-- name: rate_put
INSERT INTO {ns}_rates (key, tat)
SELECT * FROM unnest(%(key)s::text[], %(tat)s::double precision[])
ON CONFLICT (key) DO UPDATE SET tat = excluded.tat;

-- name: rate_purge
DELETE FROM {ns}_rates WHERE key IN (
    SELECT key FROM {ns}_rates WHERE tat < %(now)s FOR UPDATE SKIP LOCKED
);

-- name: unique_holder
SELECT holder FROM {ns}_uniques WHERE key = %(key)s AND expires_at > %(now)s;

-- name: unique_put
INSERT INTO {ns}_uniques (key, holder, expires_at) VALUES (%(key)s, %(holder)s, %(expires_at)s)
ON CONFLICT (key) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at;

-- name: unique_purge
DELETE FROM {ns}_uniques WHERE key IN (
    SELECT key FROM {ns}_uniques WHERE expires_at <= %(now)s FOR UPDATE SKIP LOCKED
);

-- name: unique_release
DELETE FROM {ns}_uniques WHERE key = %(key)s AND holder = %(holder)s;

-- name: pause
INSERT INTO {ns}_paused (queue, paused_at) VALUES (%(queue)s, %(now)s)
ON CONFLICT (queue) DO NOTHING;

-- name: resume
DELETE FROM {ns}_paused WHERE queue = %(queue)s;

-- name: paused
SELECT queue FROM {ns}_paused ORDER BY queue;

-- name: put_pending
INSERT INTO {ns}_outbox (id, since, message)
SELECT * FROM unnest(%(id)s::text[], %(since)s::double precision[], %(message)s::bytea[])
ON CONFLICT (id) DO UPDATE SET since = excluded.since, message = excluded.message;

-- name: pending
SELECT id, message FROM {ns}_outbox WHERE id = ANY(%(ids)s::text[]);

-- name: claim_pending
-- The oldest entries kept since before :before, stamped :now so other sweepers skip them.
UPDATE {ns}_outbox SET since = %(now)s
WHERE id IN (
    SELECT id FROM {ns}_outbox WHERE since < %(before)s ORDER BY since LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
RETURNING id, message;

-- name: clear_pending
DELETE FROM {ns}_outbox WHERE id = ANY(%(ids)s::text[]);
