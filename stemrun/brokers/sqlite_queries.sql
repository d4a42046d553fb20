-- Named queries of the SQLite broker (stemrun.brokers.sqlite). `{ns}` is the namespace; loaded
-- by stemrun.sql_db. A list parameter (`:ids`) is JSON text, expanded with json_each.
--
-- A message row is in one of three states:
--   0 ready    deliverable now, ordered by priority DESC then seq (FIFO)
--   1 delayed  due_at is its eta
--   2 leased   due_at is its lease expiry, receipt fences its owner
-- Time never writes to the database, so each fetch first promotes the queue's delayed rows whose
-- eta passed and leased rows whose lease expired back to ready (keeping their receipt, so an owner
-- whose lease lapsed but that nobody took over can still ack). due_at is NULL exactly when a row
-- is ready, so two partial indexes split the table: `ready` orders what can be leased, `timer`
-- finds what is due; the lease, the promotion and every count are index range scans.

-- name: schema
CREATE TABLE IF NOT EXISTS {ns}_messages (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL,
    queue TEXT NOT NULL,
    priority INTEGER NOT NULL,
    body BLOB NOT NULL,
    state INTEGER NOT NULL,
    due_at REAL,
    receipt TEXT,
    deliveries INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS {ns}_messages_ready
    ON {ns}_messages (queue, priority DESC, seq) WHERE state = 0;
CREATE INDEX IF NOT EXISTS {ns}_messages_timer
    ON {ns}_messages (queue, state, due_at) WHERE due_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS {ns}_messages_id ON {ns}_messages (id);
CREATE TABLE IF NOT EXISTS {ns}_dead_letters (
    id TEXT PRIMARY KEY,
    queue TEXT NOT NULL,
    priority INTEGER NOT NULL,
    body BLOB NOT NULL,
    reason TEXT NOT NULL,
    task TEXT,
    attempt INTEGER NOT NULL,
    dead_at REAL NOT NULL,
    error TEXT
);
CREATE INDEX IF NOT EXISTS {ns}_dead_letters_queue ON {ns}_dead_letters (queue, dead_at);
CREATE INDEX IF NOT EXISTS {ns}_dead_letters_age ON {ns}_dead_letters (dead_at);

-- name: publish
-- Run once per message (executemany).
INSERT INTO {ns}_messages (id, queue, priority, body, state, due_at)
VALUES (:id, :queue, :priority, :body, :state, :due_at);

-- name: promote_due
UPDATE {ns}_messages SET state = 0, due_at = NULL
WHERE queue = :queue AND state IN (1, 2) AND due_at <= :now;

-- name: lease
UPDATE {ns}_messages
SET state = 2,
    due_at = :lease_until,
    receipt = lower(hex(randomblob(16))),
    deliveries = deliveries + 1
WHERE seq IN (
    SELECT seq FROM {ns}_messages
    WHERE queue = :queue AND state = 0
    ORDER BY priority DESC, seq
    LIMIT :limit
)
RETURNING seq, id, queue, body, priority, receipt, deliveries;

-- name: any_ready
SELECT EXISTS (SELECT 1 FROM {ns}_messages WHERE queue = :queue AND state = 0);

-- name: next_due
-- min(a, b) is NULL when either is, hence the coalesce pair.
SELECT min(coalesce(delayed, leased), coalesce(leased, delayed)) FROM (
    SELECT
        (SELECT min(due_at) FROM {ns}_messages
         WHERE queue = :queue AND state = 1 AND due_at IS NOT NULL) AS delayed,
        (SELECT min(due_at) FROM {ns}_messages
         WHERE queue = :queue AND state = 2 AND due_at IS NOT NULL) AS leased
);

-- name: extend
UPDATE {ns}_messages SET state = 2, due_at = :lease_until
WHERE id = :id AND receipt = :receipt;

-- name: ack
DELETE FROM {ns}_messages WHERE id = :id AND receipt = :receipt;

-- name: requeue
-- A retry goes to the back of its priority level, like a fresh publish, hence the new seq.
UPDATE {ns}_messages
SET seq = (SELECT coalesce(max(seq), 0) + 1 FROM {ns}_messages),
    body = :body,
    state = :state,
    due_at = :due_at,
    receipt = NULL,
    deliveries = 0
WHERE id = :id AND receipt = :receipt;

-- name: take_leased
DELETE FROM {ns}_messages WHERE id = :id AND receipt = :receipt
RETURNING priority;

-- name: put_dead_letter
INSERT INTO {ns}_dead_letters
    (id, queue, priority, body, reason, task, attempt, dead_at, error)
VALUES (:id, :queue, :priority, :body, :reason, :task, :attempt, :dead_at, :error);

-- name: dead_letters_of_queue
SELECT id, queue, body, reason, task, attempt, dead_at, error FROM {ns}_dead_letters
WHERE queue = :queue
ORDER BY dead_at, rowid
LIMIT :limit;

-- name: dead_letters_all
SELECT id, queue, body, reason, task, attempt, dead_at, error FROM {ns}_dead_letters
ORDER BY dead_at, rowid
LIMIT :limit;

-- name: dead_letter_get
SELECT id, queue, body, reason, task, attempt, dead_at, error FROM {ns}_dead_letters
WHERE id = :id;

-- name: take_dead_letter
DELETE FROM {ns}_dead_letters WHERE id = :id
RETURNING queue, priority;

-- name: drop_dead_letter
DELETE FROM {ns}_dead_letters WHERE id = :id;

-- name: drop_dead_letters
DELETE FROM {ns}_dead_letters WHERE id IN (SELECT value FROM json_each(:ids));

-- name: purge_dead_letters_of_queue
DELETE FROM {ns}_dead_letters WHERE queue = :queue;

-- name: purge_dead_letters_all
DELETE FROM {ns}_dead_letters;

-- name: queue_stats
-- A row whose eta or lease has passed counts as pending even before a fetch promotes it.
SELECT
    (SELECT count(*) FROM {ns}_messages WHERE queue = :queue AND state = 0)
    + (SELECT count(*) FROM {ns}_messages
       WHERE queue = :queue AND state IN (1, 2) AND due_at <= :now),
    (SELECT count(*) FROM {ns}_messages WHERE queue = :queue AND state = 1 AND due_at > :now),
    (SELECT count(*) FROM {ns}_messages WHERE queue = :queue AND state = 2 AND due_at > :now),
    (SELECT count(*) FROM {ns}_dead_letters WHERE queue = :queue);
