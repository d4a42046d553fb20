-- Named queries of the Postgres schedule store (stemrun.schedules.postgres). `{ns}` is the
-- namespace; loaded by stemrun.sql_db. An entry is stored whole as JSON in `data`; `enabled`,
-- `next_run_at` and `version` are copies kept as columns so due entries are found by index and
-- updates are fenced on the version without parsing. Every write is one statement: under READ
-- COMMITTED a writer that waited on a concurrent one re-checks its WHERE against the row that one
-- committed, so a stale version or a foreign lease changes nothing (rowcount 0).
-- The beat lease is a row (owner, expires_at) rather than a session advisory lock: it survives
-- a dropped connection, expires by itself after its TTL, and is judged by the beats' clocks.

-- name: schema
CREATE TABLE IF NOT EXISTS {ns}_schedules (
    name text PRIMARY KEY,
    enabled boolean NOT NULL,
    next_run_at double precision,
    version integer NOT NULL,
    data json NOT NULL
);
CREATE INDEX IF NOT EXISTS {ns}_schedules_due
    ON {ns}_schedules (next_run_at) WHERE enabled AND next_run_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS {ns}_leases (
    name text PRIMARY KEY,
    owner text NOT NULL,
    expires_at double precision NOT NULL
);

-- name: get
SELECT data::text FROM {ns}_schedules WHERE name = %(name)s;

-- name: list
SELECT data::text FROM {ns}_schedules ORDER BY name;

-- name: due
SELECT data::text FROM {ns}_schedules
WHERE enabled AND next_run_at IS NOT NULL AND next_run_at <= %(now)s
ORDER BY next_run_at, name
LIMIT %(limit)s;

-- name: next_due_at
SELECT min(next_run_at) FROM {ns}_schedules WHERE enabled AND next_run_at IS NOT NULL;

-- name: add
INSERT INTO {ns}_schedules (name, enabled, next_run_at, version, data)
VALUES (%(name)s, %(enabled)s, %(next_run_at)s, %(version)s, %(data)s::json)
ON CONFLICT (name) DO NOTHING;

-- name: update
UPDATE {ns}_schedules
SET enabled = %(enabled)s, next_run_at = %(next_run_at)s, version = %(version)s,
    data = %(data)s::json
WHERE name = %(name)s AND version = %(version)s - 1;

-- name: remove
DELETE FROM {ns}_schedules WHERE name = %(name)s;

-- name: remove_at
DELETE FROM {ns}_schedules WHERE name = %(name)s AND version = %(version)s;

-- name: acquire_lease
INSERT INTO {ns}_leases AS l (name, owner, expires_at)
VALUES (%(lease)s, %(owner)s, %(expires_at)s)
ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at
WHERE l.owner = %(owner)s OR l.expires_at <= %(now)s;

-- name: renew_lease
UPDATE {ns}_leases SET expires_at = %(expires_at)s
WHERE name = %(lease)s AND owner = %(owner)s AND expires_at > %(now)s;

-- name: release_lease
DELETE FROM {ns}_leases WHERE name = %(lease)s AND owner = %(owner)s;

-- name: lease_owner
SELECT owner FROM {ns}_leases WHERE name = %(lease)s AND expires_at > %(now)s;
