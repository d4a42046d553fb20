-- Lua scripts of the Redis result backend (stemrun/backends/redis.py).
--
-- Keys (mirrors BACKEND_KEYS in stemrun/redis_keys.py; tests/integration/test_redis_keys.py
-- checks they match); scripts receive them in KEYS:
--
--   {ns}:status:{id}                 hash: d = record JSON, x = expires_at or '', v = version
--   {ns}:workers                     hash: worker id -> heartbeat JSON
--   {ns}:worker_deadlines            zset: worker id -> heartbeat expiry
--   {ns}:chord:{id}                  hash: m{index} = member result JSON, x = expires_at
--   {ns}:counters                    hash: counter name -> total (HINCRBY from redis.py)
--   {ns}:rate:{key}                  string: a rate limiter's next free start slot
--   {ns}:unique:{key}                hash: h = holder task id, x = expires_at
--   {ns}:paused                      set: paused queue names (SADD/SREM from redis.py)
--   {ns}:outbox                      hash: task id -> message kept until its broker has it
--   {ns}:outbox_since                zset: task id -> when kept or last claimed
--
-- A record whose `x` has passed (by the caller's clock, ARGV) counts as absent; Redis drops the
-- key about a second later on its own (PEXPIRE, relative, so a test clock works too). Fenced
-- writes are compare-and-set on `v`: the client read the record and its version, applied the
-- transition, and the write lands only if nobody wrote in between.
--
-- Each `-- script: NAME` section below is one script; this prelude is prepended to each.

-- Write a whole record: JSON, expiry, version, and the key's TTL ('' = keep forever).
local function put(key, json, expires_at, ttl_ms, version)
  redis.call("HSET", key, "d", json, "x", expires_at, "v", version)
  if ttl_ms == "" then
    redis.call("PERSIST", key)
  else
    redis.call("PEXPIRE", key, ttl_ms)
  end
end

-- Insert a record unless a live one exists under `key`: 1 when inserted, else 0.
local function insert(key, json, expires_at, ttl_ms, now)
  local x = redis.call("HGET", key, "x")
  if x == false or (x ~= "" and tonumber(x) < now) then
    local version = redis.call("HINCRBY", key, "v", 1)
    put(key, json, expires_at, ttl_ms, version)
    return 1
  end
  return 0
end

-- script: create
-- KEYS: status keys. ARGV: now, then (json, expires_at, ttl_ms) per key. Inserts where no live
-- record exists (a repeated key in the batch is not new the second time); returns 1/0 each.
local now = tonumber(ARGV[1])
local out = {}
for i, key in ipairs(KEYS) do
  local base = 2 + (i - 1) * 3
  out[i] = insert(key, ARGV[base], ARGV[base + 1], ARGV[base + 2], now)
end
return out

-- script: create_pending
-- KEYS: status keys, then the outbox hash and its since zset. ARGV: now, then (json,
-- expires_at, ttl_ms, id, message) per status key. `create`, keeping each new record's message.
local now = tonumber(ARGV[1])
local outbox, since = KEYS[#KEYS - 1], KEYS[#KEYS]
local out = {}
for i = 1, #KEYS - 2 do
  local base = 2 + (i - 1) * 5
  out[i] = insert(KEYS[i], ARGV[base], ARGV[base + 1], ARGV[base + 2], now)
  if out[i] == 1 then
    redis.call("HSET", outbox, ARGV[base + 3], ARGV[base + 4])
    redis.call("ZADD", since, now, ARGV[base + 3])
  end
end
return out

-- script: claim_pending
-- KEYS: the outbox hash and its since zset. ARGV: before, now, limit. Returns (id, message) of
-- the oldest entries kept since before `before`, restamped `now`.
local ids = redis.call("ZRANGEBYSCORE", KEYS[2], "-inf", "(" .. ARGV[1], "LIMIT", 0, ARGV[3])
local out = {}
for _, id in ipairs(ids) do
  redis.call("ZADD", KEYS[2], ARGV[2], id)
  out[#out + 1] = id
  out[#out + 1] = redis.call("HGET", KEYS[1], id) or ""
end
return out

-- script: compare_and_set
-- KEYS: status keys. ARGV: (expected version, json, expires_at, ttl_ms) per key. Writes each
-- record whose version is still the expected one; after a miss, later writes to the same key in
-- this batch are skipped too (they were computed from the missed one). Returns 1/0 each.
local out, missed = {}, {}
for i, key in ipairs(KEYS) do
  local base = 1 + (i - 1) * 4
  local version = redis.call("HGET", key, "v")
  if not missed[key] and version == ARGV[base] then
    put(key, ARGV[base + 1], ARGV[base + 2], ARGV[base + 3], tonumber(version) + 1)
    out[i] = 1
  else
    missed[key] = true
    out[i] = 0
  end
end
return out

-- script: replace
-- KEYS: one status key. ARGV: json, expires_at, ttl_ms. Unconditional write.
local version = redis.call("HINCRBY", KEYS[1], "v", 1)
put(KEYS[1], ARGV[1], ARGV[2], ARGV[3], version)
return 1

-- script: purge_expired
-- KEYS: status keys (one SCAN page). ARGV: now. Deletes the records expired by `now`.
local now = tonumber(ARGV[1])
local deleted = 0
for _, key in ipairs(KEYS) do
  local x = redis.call("HGET", key, "x")
  if x and x ~= "" and tonumber(x) < now then
    deleted = deleted + redis.call("DEL", key)
  end
end
return deleted

-- script: put_worker
-- KEYS: workers, worker_deadlines. ARGV: id, heartbeat JSON, expires_at, now. Also drops the
-- heartbeats that expired, so stopped workers do not pile up.
redis.call("HSET", KEYS[1], ARGV[1], ARGV[2])
redis.call("ZADD", KEYS[2], ARGV[3], ARGV[1])
local gone = redis.call("ZRANGEBYSCORE", KEYS[2], "-inf", "(" .. ARGV[4])
for _, id in ipairs(gone) do
  redis.call("HDEL", KEYS[1], id)
  redis.call("ZREM", KEYS[2], id)
end
return #gone

-- script: workers
-- KEYS: workers, worker_deadlines. ARGV: now. Returns the live heartbeats' JSON.
local live = redis.call("ZRANGEBYSCORE", KEYS[2], ARGV[1], "+inf")
if #live == 0 then return {} end
return redis.call("HMGET", KEYS[1], unpack(live))

-- script: chord_add
-- KEYS: one chord key. ARGV: now, index, result JSON, size, expires_at, ttl_ms. A chord whose
-- `x` has passed (caller's clock) starts afresh. The first result of an index wins (HSETNX);
-- returns the results in index order when all `size` members are recorded, else nil.
local now = tonumber(ARGV[1])
local x = redis.call("HGET", KEYS[1], "x")
if x and tonumber(x) < now then
  redis.call("DEL", KEYS[1])
end
if redis.call("HSETNX", KEYS[1], "m" .. ARGV[2], ARGV[3]) == 1 then
  redis.call("HSET", KEYS[1], "x", ARGV[5])
  redis.call("PEXPIRE", KEYS[1], ARGV[6])
end
local size = tonumber(ARGV[4])
if redis.call("HLEN", KEYS[1]) - 1 < size then
  return false
end
local out = {}
for i = 0, size - 1 do
  out[i + 1] = redis.call("HGET", KEYS[1], "m" .. i)
end
return out

-- script: reserve_rate_slot
-- KEYS: rate limiter keys. ARGV: now, then one interval per key. The slot is the latest of `now`
-- and every key's next free slot; each key moves to slot + its interval and expires a second
-- after that (a passed slot means the same as none). Returns the slot as exact text (%.17g).
local now = tonumber(ARGV[1])
local slot = now
for _, key in ipairs(KEYS) do
  local tat = tonumber(redis.call("GET", key) or "")
  if tat and tat > slot then slot = tat end
end
for i, key in ipairs(KEYS) do
  local after = slot + tonumber(ARGV[i + 1])
  local ttl_ms = math.ceil((after - now) * 1000) + 1000
  redis.call("SET", key, string.format("%.17g", after), "PX", ttl_ms)
end
return string.format("%.17g", slot)

-- script: claim_unique
-- KEYS: one unique key. ARGV: task id, now, expires_at, ttl_ms. Returns the holder's id while a
-- claim is live (by the caller's clock), else takes the key for the task id and returns false.
local x = redis.call("HGET", KEYS[1], "x")
if x and tonumber(x) > tonumber(ARGV[2]) then
  return redis.call("HGET", KEYS[1], "h")
end
redis.call("DEL", KEYS[1])
redis.call("HSET", KEYS[1], "h", ARGV[1], "x", ARGV[3])
redis.call("PEXPIRE", KEYS[1], ARGV[4])
return false

-- script: release_unique
-- KEYS: one unique key. ARGV: task id. Deletes the key only while that id holds it; 1 or 0.
if redis.call("HGET", KEYS[1], "h") == ARGV[1] then
  return redis.call("DEL", KEYS[1])
end
return 0
