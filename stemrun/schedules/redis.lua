-- Lua scripts of the Redis schedule store (stemrun/schedules/redis.py).
--
-- Keys (mirrors SCHEDULE_KEYS in stemrun/redis_keys.py); scripts receive them in KEYS:
--
--   {ns}:schedule:{name}             hash: d = entry JSON, v = version
--   {ns}:schedules                   zset: every entry name, score 0 (listed by name)
--   {ns}:schedules_due               zset: enabled, armed entry name -> next_run_at
--   {ns}:lease:{name}                hash: o = owner, x = expires_at (caller's clock)
--
-- Entry writes are compare-and-set on `v` inside one script, so two beats (or a beat and
-- `schedule apply`) never overwrite each other. Lease times come from the caller's clock (ARGV),
-- so a test clock works; the key also gets a Redis TTL (relative) so a dead owner's lease goes.
--
-- Each `-- script: NAME` section below is one script; this prelude is prepended to each.

-- Store an entry at `version` and index it; `due` is '' when it is not armed.
local function put(keys, name, json, version, due)
  redis.call("HSET", keys[1], "d", json, "v", version)
  redis.call("ZADD", keys[2], 0, name)
  if due == "" then
    redis.call("ZREM", keys[3], name)
  else
    redis.call("ZADD", keys[3], due, name)
  end
end

-- script: add
-- KEYS: entry, names, due. ARGV: name, json, due. Returns 1, or 0 when the name exists.
if redis.call("EXISTS", KEYS[1]) == 1 then
  return 0
end
put(KEYS, ARGV[1], ARGV[2], 1, ARGV[3])
return 1

-- script: update
-- KEYS: entry, names, due. ARGV: name, json, due, expected version. Returns 1, or 0 when the
-- entry is gone or its version moved on.
local v = redis.call("HGET", KEYS[1], "v")
if v == false or tonumber(v) ~= tonumber(ARGV[4]) then
  return 0
end
put(KEYS, ARGV[1], ARGV[2], tonumber(ARGV[4]) + 1, ARGV[3])
return 1

-- script: remove
-- KEYS: entry, names, due. ARGV: name, expected version ('' = any). Returns 1 or 0.
local v = redis.call("HGET", KEYS[1], "v")
if v == false or (ARGV[2] ~= "" and tonumber(v) ~= tonumber(ARGV[2])) then
  return 0
end
redis.call("DEL", KEYS[1])
redis.call("ZREM", KEYS[2], ARGV[1])
redis.call("ZREM", KEYS[3], ARGV[1])
return 1

-- script: acquire_lease
-- KEYS: lease. ARGV: owner, now, expires_at, ttl_ms. Takes a free, expired or own lease.
local owner = redis.call("HGET", KEYS[1], "o")
local until_ = redis.call("HGET", KEYS[1], "x")
if owner and owner ~= ARGV[1] and tonumber(until_) > tonumber(ARGV[2]) then
  return 0
end
redis.call("HSET", KEYS[1], "o", ARGV[1], "x", ARGV[3])
redis.call("PEXPIRE", KEYS[1], ARGV[4])
return 1

-- script: renew_lease
-- KEYS: lease. ARGV: owner, now, expires_at, ttl_ms. Extends an unexpired lease of `owner`.
local owner = redis.call("HGET", KEYS[1], "o")
local until_ = redis.call("HGET", KEYS[1], "x")
if owner ~= ARGV[1] or tonumber(until_) <= tonumber(ARGV[2]) then
  return 0
end
redis.call("HSET", KEYS[1], "x", ARGV[3])
redis.call("PEXPIRE", KEYS[1], ARGV[4])
return 1

-- script: release_lease
-- KEYS: lease. ARGV: owner. Deletes the lease if `owner` holds it.
if redis.call("HGET", KEYS[1], "o") == ARGV[1] then
  redis.call("DEL", KEYS[1])
end
return 1
