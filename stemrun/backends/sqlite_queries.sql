-- Named queries of the SQLite result backend (stemrun.backends.sqlite). `{ns}` is the namespace;
-- loaded by stemrun.sql_db. A status record is stored whole as JSON in `data`; `state`, `attempt`
-- and `expires_at` are copies kept as columns so they can be indexed and filtered without parsing.
-- A list parameter (`:ids`) is JSON text, expanded with json_each; a batch runs a statement once
-- per row (executemany). Every write runs in BEGIN IMMEDIATE, so it holds the file's write lock
-- from its start: reads inside it see rows no other writer can change until commit.

-- name: schema
CREATE TABLE IF NOT EXISTS {ns}_status (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    expires_at REAL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS {ns}_status_state ON {ns}_status (state);
CREATE INDEX IF NOT EXISTS {ns}_status_expires
    ON {ns}_status (expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS {ns}_workers (
    id TEXT PRIMARY KEY,
    info TEXT NOT NULL,
    expires_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS {ns}_chords (
    chord_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    result TEXT NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (chord_id, idx)
);
CREATE TABLE IF NOT EXISTS {ns}_counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS {ns}_rates (
    key TEXT PRIMARY KEY,
    tat REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS {ns}_rates_tat ON {ns}_rates (tat);
CREATE TABLE IF NOT EXISTS {ns}_uniques (
    key TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS {ns}_uniques_expires ON {ns}_uniques (expires_at);
CREATE TABLE IF NOT EXISTS {ns}_paused (
    queue TEXT PRIMARY KEY,
    paused_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS {ns}_outbox (
    id TEXT PRIMARY KEY,
    since REAL NOT NULL,
    message BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS {ns}_outbox_since ON {ns}_outbox (since);

-- name: create
-- An expired record counts as absent: its id may be used again. Run once per new record.
INSERT INTO {ns}_status (id, state, attempt, expires_at, data)
VALUES (:id, :state, :attempt, :expires_at, :data)
ON CONFLICT (id) DO UPDATE SET
    state = excluded.state,
    attempt = excluded.attempt,
    expires_at = excluded.expires_at,
    data = excluded.data
WHERE {ns}_status.expires_at < :now;

-- name: live_ids
-- Which of a JSON array of ids already have a live (unexpired) record.
SELECT id FROM {ns}_status
WHERE id IN (SELECT value FROM json_each(:ids))
  AND (expires_at IS NULL OR expires_at >= :now);

-- name: upsert
INSERT INTO {ns}_status (id, state, attempt, expires_at, data)
VALUES (:id, :state, :attempt, :expires_at, :data)
ON CONFLICT (id) DO UPDATE SET
    state = excluded.state,
    attempt = excluded.attempt,
    expires_at = excluded.expires_at,
    data = excluded.data;

-- name: get
SELECT data FROM {ns}_status
WHERE id = :id AND (expires_at IS NULL OR expires_at >= :now);

-- name: list
-- Newest first; a NULL filter matches every record (the dashboard's task list).
SELECT data FROM {ns}_status
WHERE (expires_at IS NULL OR expires_at >= :now)
    AND (:state IS NULL OR state = :state)
    AND (:task IS NULL OR json_extract(data, '$.task') = :task)
    AND (:queue IS NULL OR json_extract(data, '$.queue') = :queue)
ORDER BY json_extract(data, '$.created_at') DESC, id
LIMIT :limit OFFSET :offset;

-- name: lock_live
-- The live records of a batch (the transaction's write lock keeps them as read).
SELECT data FROM {ns}_status
WHERE id IN (SELECT value FROM json_each(:ids)) AND (expires_at IS NULL OR expires_at >= :now)
ORDER BY id;

-- name: update_many
-- Run once per record.
UPDATE {ns}_status
SET state = :state, attempt = :attempt, expires_at = :expires_at, data = :data
WHERE id = :id;

-- name: delete
DELETE FROM {ns}_status WHERE id IN (SELECT value FROM json_each(:ids));

-- name: purge_expired
DELETE FROM {ns}_status WHERE expires_at < :now;

-- name: purge_expired_workers
DELETE FROM {ns}_workers WHERE expires_at < :now;

-- name: put_worker
INSERT INTO {ns}_workers (id, info, expires_at) VALUES (:id, :info, :expires_at)
ON CONFLICT (id) DO UPDATE SET info = excluded.info, expires_at = excluded.expires_at;

-- name: workers
SELECT info FROM {ns}_workers WHERE expires_at >= :now ORDER BY id;

-- name: remove_worker
DELETE FROM {ns}_workers WHERE id = :id;

-- name: chord_add
-- The first result of a member index wins; a repeat changes nothing.
INSERT INTO {ns}_chords (chord_id, idx, result, expires_at)
VALUES (:chord_id, :idx, :result, :expires_at)
ON CONFLICT (chord_id, idx) DO NOTHING;

-- name: chord_count
SELECT count(*) FROM {ns}_chords WHERE chord_id = :chord_id;

-- name: chord_results
SELECT result FROM {ns}_chords WHERE chord_id = :chord_id ORDER BY idx;

-- name: purge_expired_chords
DELETE FROM {ns}_chords WHERE expires_at < :now;

-- name: incr_counters
-- Atomic add, run once per counter: concurrent workers' increments never overwrite each other.
INSERT INTO {ns}_counters (name, value) VALUES (:name, :value)
ON CONFLICT (name) DO UPDATE SET value = value + excluded.value;

-- name: counters
SELECT name, value FROM {ns}_counters;

-- Flow control (stemrun.flow, docs/flow-control.md). A rate limiter row holds its next free
-- start slot (`tat`); a row whose slot has passed means the same as no row, so it is dropped.

-- name: rate_get
SELECT key, tat FROM {ns}_rates WHERE key IN (SELECT value FROM json_each(:keys));

-- name: rate_put
-- Run once per limiter.
INSERT INTO {ns}_rates (key, tat) VALUES (:key, :tat)
ON CONFLICT (key) DO UPDATE SET tat = excluded.tat;

-- name: rate_purge
DELETE FROM {ns}_rates WHERE tat < :now;

-- name: unique_holder
SELECT holder FROM {ns}_uniques WHERE key = :key AND expires_at > :now;

-- name: unique_put
INSERT INTO {ns}_uniques (key, holder, expires_at) VALUES (:key, :holder, :expires_at)
ON CONFLICT (key) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at;

-- name: unique_purge
DELETE FROM {ns}_uniques WHERE expires_at <= :now;

-- name: unique_release
DELETE FROM {ns}_uniques WHERE key = :key AND holder = :holder;

-- name: pause
INSERT INTO {ns}_paused (queue, paused_at) VALUES (:queue, :now) ON CONFLICT (queue) DO NOTHING;

-- name: resume
DELETE FROM {ns}_paused WHERE queue = :queue;

-- name: paused
SELECT queue FROM {ns}_paused ORDER BY queue;

-- name: put_pending
-- Run once per message (executemany).
INSERT INTO {ns}_outbox (id, since, message) VALUES (:id, :since, :message)
ON CONFLICT (id) DO UPDATE SET since = excluded.since, message = excluded.message;

-- name: pending
SELECT id, message FROM {ns}_outbox WHERE id IN (SELECT value FROM json_each(:ids));

-- name: claim_pending
-- The oldest entries kept since before :before, stamped :now so other sweepers skip them.
UPDATE {ns}_outbox SET since = :now
WHERE id IN (
    SELECT id FROM {ns}_outbox WHERE since < :before ORDER BY since LIMIT :limit
)
RETURNING id, message;

-- name: clear_pending
DELETE FROM {ns}_outbox WHERE id IN (SELECT value FROM json_each(:ids));
