-- Named queries of the Postgres broker (stemrun.brokers.postgres). `{ns}` is the namespace;
-- loaded by stemrun.sql_db. A batch travels as one array per column, named after the column.
--
-- A message row is in one of three states:
--   0 ready    deliverable now, ordered by priority DESC then seq (FIFO)
--   1 delayed  due_at is its eta
--   2 leased   due_at is its lease expiry, receipt fences its owner
-- A delayed row whose eta passed and a leased row whose lease lapsed are deliverable too; time
-- never writes, so the lease query takes them as they are. A lapsed lease keeps its receipt until
-- another consumer leases the row, so an owner nobody took over can still ack.
-- Consumers lease with FOR UPDATE SKIP LOCKED: racing consumers skip each other's rows instead of
-- waiting on them, and never share one. Publishes NOTIFY the channel `{ns}_work` (delivered at
-- commit) to wake blocked fetches. All times are epoch seconds from the caller's clock.

-- name: schema
CREATE SEQUENCE IF NOT EXISTS {ns}_messages_seq;
CREATE TABLE IF NOT EXISTS {ns}_messages (
    seq bigint PRIMARY KEY DEFAULT nextval('{ns}_messages_seq'),
    id text NOT NULL,
    queue text NOT NULL,
    priority integer NOT NULL,
    body bytea NOT NULL,
    state smallint NOT NULL,
    due_at double precision,
    receipt text,
    deliveries integer NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS {ns}_messages_order ON {ns}_messages (queue, priority DESC, seq);
CREATE INDEX IF NOT EXISTS {ns}_messages_timer
    ON {ns}_messages (queue, due_at) WHERE due_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS {ns}_messages_id ON {ns}_messages (id);
CREATE SEQUENCE IF NOT EXISTS {ns}_dead_letters_seq;
CREATE TABLE IF NOT EXISTS {ns}_dead_letters (
    id text PRIMARY KEY,
    seq bigint NOT NULL DEFAULT nextval('{ns}_dead_letters_seq'),
    queue text NOT NULL,
    priority integer NOT NULL,
    body bytea NOT NULL,
    reason text NOT NULL,
    task text,
    attempt integer NOT NULL,
    dead_at double precision NOT NULL,
    error json
);
CREATE INDEX IF NOT EXISTS {ns}_dead_letters_queue ON {ns}_dead_letters (queue, dead_at, seq);
CREATE INDEX IF NOT EXISTS {ns}_dead_letters_age ON {ns}_dead_letters (dead_at, seq);

-- name: publish
INSERT INTO {ns}_messages (id, queue, priority, body, state, due_at)
SELECT * FROM unnest(
    %(id)s::text[], %(queue)s::text[], %(priority)s::integer[], %(body)s::bytea[],
    %(state)s::smallint[], %(due_at)s::double precision[]
);

-- name: notify
SELECT pg_notify('{ns}_work', queue) FROM unnest(%(queues)s::text[]) AS queue;

-- name: listen
LISTEN {ns}_work;

-- name: lease
WITH picked AS (
    SELECT seq FROM {ns}_messages
    WHERE queue = %(queue)s AND (state = 0 OR due_at <= %(now)s)
    ORDER BY priority DESC, seq
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE {ns}_messages AS m
SET state = 2,
    due_at = %(lease_until)s,
    receipt = gen_random_uuid()::text,
    deliveries = m.deliveries + 1
FROM picked
WHERE m.seq = picked.seq
RETURNING m.seq, m.id, m.queue, m.body, m.priority, m.receipt, m.deliveries;

-- name: next_due
SELECT min(due_at) FROM {ns}_messages WHERE queue = ANY(%(queues)s::text[]) AND due_at IS NOT NULL;

-- name: extend
UPDATE {ns}_messages SET state = 2, due_at = %(lease_until)s
WHERE id = %(id)s AND receipt = %(receipt)s;

-- name: ack
DELETE FROM {ns}_messages WHERE id = %(id)s AND receipt = %(receipt)s;

-- name: requeue
-- A retry goes to the back of its priority level, like a fresh publish, hence the new seq.
UPDATE {ns}_messages
SET seq = nextval('{ns}_messages_seq'),
    body = %(body)s,
    state = %(state)s,
    due_at = %(due_at)s,
    receipt = NULL,
    deliveries = 0
WHERE id = %(id)s AND receipt = %(receipt)s;

-- name: take_leased
DELETE FROM {ns}_messages WHERE id = %(id)s AND receipt = %(receipt)s
RETURNING priority;

-- name: drop_dead_letter
DELETE FROM {ns}_dead_letters WHERE id = %(id)s;

-- name: put_dead_letter
INSERT INTO {ns}_dead_letters (id, queue, priority, body, reason, task, attempt, dead_at, error)
VALUES (
    %(id)s, %(queue)s, %(priority)s, %(body)s, %(reason)s, %(task)s, %(attempt)s, %(dead_at)s,
    %(error)s::json
);

-- name: dead_letters_of_queue
SELECT id, queue, body, reason, task, attempt, dead_at, error::text FROM {ns}_dead_letters
WHERE queue = %(queue)s
ORDER BY dead_at, seq
LIMIT %(limit)s;

-- name: dead_letters_all
SELECT id, queue, body, reason, task, attempt, dead_at, error::text FROM {ns}_dead_letters
ORDER BY dead_at, seq
LIMIT %(limit)s;

-- name: dead_letter_get
SELECT id, queue, body, reason, task, attempt, dead_at, error::text FROM {ns}_dead_letters
WHERE id = %(id)s;

-- name: take_dead_letter
DELETE FROM {ns}_dead_letters WHERE id = %(id)s
RETURNING queue, priority;

-- name: drop_dead_letters
DELETE FROM {ns}_dead_letters WHERE id = ANY(%(ids)s);

-- name: purge_dead_letters_of_queue
DELETE FROM {ns}_dead_letters WHERE queue = %(queue)s;

-- name: purge_dead_letters_all
DELETE FROM {ns}_dead_letters;

-- name: queue_stats
-- A row whose eta or lease has passed counts as pending.
SELECT
    count(*) FILTER (WHERE state = 0 OR due_at <= %(now)s),
    count(*) FILTER (WHERE state = 1 AND due_at > %(now)s),
    count(*) FILTER (WHERE state = 2 AND due_at > %(now)s),
    (SELECT count(*) FROM {ns}_dead_letters WHERE queue = %(queue)s)
FROM {ns}_messages WHERE queue = %(queue)s;
