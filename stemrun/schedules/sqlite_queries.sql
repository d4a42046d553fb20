-- Named queries of the SQLite schedule store (stemrun.schedules.sqlite). `{ns}` is the
-- namespace; loaded by stemrun.sql_db. An entry is stored whole as JSON in `data`; `enabled`,
-- `next_run_at` and `version` are copies kept as columns so due entries are found by index and
-- updates can be fenced on the version without parsing.

-- name: schema
CREATE TABLE IF NOT EXISTS {ns}_schedules (
    name TEXT PRIMARY KEY,
    enabled INTEGER NOT NULL,
    next_run_at REAL,
    version INTEGER NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS {ns}_schedules_due
    ON {ns}_schedules (next_run_at) WHERE enabled = 1 AND next_run_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS {ns}_leases (
    name TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    expires_at REAL NOT NULL
);

-- name: get
SELECT data FROM {ns}_schedules WHERE name = :name;

-- name: list
SELECT data FROM {ns}_schedules ORDER BY name;

-- name: due
SELECT data FROM {ns}_schedules
WHERE enabled = 1 AND next_run_at IS NOT NULL AND next_run_at <= :now
ORDER BY next_run_at, name
LIMIT :limit;

-- name: next_due_at
SELECT MIN(next_run_at) FROM {ns}_schedules WHERE enabled = 1 AND next_run_at IS NOT NULL;

-- name: add
INSERT INTO {ns}_schedules (name, enabled, next_run_at, version, data)
VALUES (:name, :enabled, :next_run_at, :version, :data)
ON CONFLICT (name) DO NOTHING;

-- name: update
-- Fenced on the version the caller read: a stale writer changes nothing (rowcount 0).
UPDATE {ns}_schedules
SET enabled = :enabled, next_run_at = :next_run_at, version = :version, data = :data
WHERE name = :name AND version = :version - 1;

-- name: remove
DELETE FROM {ns}_schedules WHERE name = :name;

-- name: remove_at
DELETE FROM {ns}_schedules WHERE name = :name AND version = :version;

-- name: acquire_lease
-- Free, expired, or already ours: take it. Otherwise nothing changes (rowcount 0).
INSERT INTO {ns}_leases (name, owner, expires_at) VALUES (:lease, :owner, :expires_at)
ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at
WHERE {ns}_leases.owner = :owner OR {ns}_leases.expires_at <= :now;

-- name: renew_lease
UPDATE {ns}_leases SET expires_at = :expires_at
WHERE name = :lease AND owner = :owner AND expires_at > :now;

-- name: release_lease
DELETE FROM {ns}_leases WHERE name = :lease AND owner = :owner;

-- name: lease_owner
SELECT owner FROM {ns}_leases WHERE name = :lease AND expires_at > :now;
