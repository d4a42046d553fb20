-- Lua scripts of the Redis Streams broker (stemrun/brokers/redis_streams.py).
--
-- Every script gets the namespace as ARGV[1] and builds its keys with the functions below,
-- because the keys a fetch touches depend on the queues and priorities it finds. Keys (mirrors
-- BROKER_KEYS in stemrun/redis_keys.py; tests/integration/test_redis_keys.py checks they match):
--
--   {ns}:stream:{queue}:{priority}   stream per queue and priority 0..9, consumer group "stemrun"
--   {ns}:leases:{queue}              zset: receipt member -> lease deadline
--   {ns}:delayed:{queue}             zset: msgpack(seq, priority, id, body) -> eta
--   {ns}:wake:{queue}                list of wake-up tokens for fetchers blocked in BLPOP
--   {ns}:sequence                    counter making delayed members unique
--   {ns}:dead_letter:{id}            hash: one dead letter
--   {ns}:dead_letters                zset: every dead letter id -> dead_at
--   {ns}:dead_letters:{queue}        zset: one queue's dead letter ids -> dead_at
--
-- A message is in exactly one place: the delayed set (not due yet), its stream (due, delivered
-- or not), or the dead letters. A delivered entry is in the group's pending list and in the
-- queue's leases set under its receipt member `{priority}/{entry id}/{deliveries}`. Acks,
-- renewals, requeues and dead-letter moves first remove or check that member, so a stale owner,
-- whose member was replaced when the entry was reclaimed, changes nothing. Times come from the
-- caller's clock (ARGV), never from Redis TIME, so tests can move time by hand.
--
-- Each `-- script: NAME` section below is one script; this prelude is prepended to each.

local ns = ARGV[1]
local GROUP = "stemrun"
local WAKE_TOKENS = 16
local PROMOTE_BATCH = 1000

local function stream_key(queue, priority) return ns .. ":stream:" .. queue .. ":" .. priority end
local function leases_key(queue) return ns .. ":leases:" .. queue end
local function delayed_key(queue) return ns .. ":delayed:" .. queue end
local function wake_key(queue) return ns .. ":wake:" .. queue end
local function sequence_key() return ns .. ":sequence" end
local function dead_letter_key(id) return ns .. ":dead_letter:" .. id end
local function dead_letters_key() return ns .. ":dead_letters" end
local function queue_dead_letters_key(queue) return ns .. ":dead_letters:" .. queue end

-- A receipt member: priority, stream entry id, delivery count.
local function parse(member)
  local priority, entry, deliveries = string.match(member, "^(%d)/([^/]+)/(%d+)$")
  return priority, entry, tonumber(deliveries)
end

-- Due now (eta '' or passed): append to the stream. Otherwise park in the delayed set.
local function place(queue, priority, id, body, eta, now)
  if eta ~= "" and tonumber(eta) > now then
    local seq = redis.call("INCR", sequence_key())
    redis.call("ZADD", delayed_key(queue), eta, cmsgpack.pack(seq, priority, id, body))
  else
    redis.call("XADD", stream_key(queue, priority), "*", "id", id, "body", body)
  end
end

-- Wake up to `count` blocked fetchers; the list is capped, so tokens nobody takes stay few.
local function wake(queue, count)
  local tokens = {}
  for i = 1, math.min(count, WAKE_TOKENS) do tokens[i] = "1" end
  redis.call("LPUSH", wake_key(queue), unpack(tokens))
  redis.call("LTRIM", wake_key(queue), 0, WAKE_TOKENS - 1)
end

-- Count one message placed in `queue`; `order` keeps the queues in the order first seen.
local function tally(counts, order, queue)
  if not counts[queue] then
    counts[queue] = 0
    order[#order + 1] = queue
  end
  counts[queue] = counts[queue] + 1
end

-- Wake the consumers of every tallied queue, once per message placed in it.
local function wake_tallied(counts, order)
  for _, queue in ipairs(order) do wake(queue, counts[queue]) end
end

-- Remove a leased entry if `member` still holds its lease: its priority, or false when stale.
local function take(queue, member)
  if redis.call("ZREM", leases_key(queue), member) == 0 then return false end
  local priority, entry = parse(member)
  local key = stream_key(queue, priority)
  -- pcall: a group lost in a restart must not keep the entry from being deleted.
  redis.pcall("XACK", key, GROUP, entry)
  redis.call("XDEL", key, entry)
  return priority
end

-- script: publish
-- ARGV: ns, now, then (queue, priority, id, body, eta or '') per message.
local now = tonumber(ARGV[2])
local counts, order = {}, {}
for i = 3, #ARGV, 5 do
  place(ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], now)
  tally(counts, order, ARGV[i])
end
wake_tallied(counts, order)
return #order

-- script: fetch
-- ARGV: ns, now, lease_until, limit, consumer, peek prefix, n, then n (queue, member) pairs to
-- acknowledge first (as `ack`), then queue... Returns {next_due, then (queue, member, id, body)
-- per delivery, followed by the fields d, x, v of the hash `{peek prefix}{id}` when the prefix is
-- not ''}; next_due (the earliest eta or lease deadline, '' for none) is only looked up when
-- nothing was leased. (A result backend on the same Redis peeks at the status records this way,
-- so the worker's `running` writes need no read of their own.)
local lease_until, remaining, consumer, peek = ARGV[3], tonumber(ARGV[4]), ARGV[5], ARGV[6]
local first_queue = 8 + 2 * tonumber(ARGV[7])
for i = 8, first_queue - 1, 2 do take(ARGV[i], ARGV[i + 1]) end
local out = {""}

local function lease(queue, priority, entry, deliveries, fields)
  local member = priority .. "/" .. entry .. "/" .. deliveries
  redis.call("ZADD", leases_key(queue), lease_until, member)
  -- fields are {"id", id, "body", body}, as place() wrote them
  out[#out + 1] = queue
  out[#out + 1] = member
  out[#out + 1] = fields[2]
  out[#out + 1] = fields[4]
  if peek ~= "" then
    local d, x, v = unpack(redis.call("HMGET", peek .. fields[2], "d", "x", "v"))
    out[#out + 1] = d or ""
    out[#out + 1] = x or ""
    out[#out + 1] = v or ""
  end
  remaining = remaining - 1
end

local function promote(queue)
  local key = delayed_key(queue)
  local due = redis.call("ZRANGEBYSCORE", key, "-inf", ARGV[2], "LIMIT", 0, PROMOTE_BATCH)
  for _, member in ipairs(due) do
    local _, priority, id, body = cmsgpack.unpack(member)
    redis.call("XADD", stream_key(queue, priority), "*", "id", id, "body", body)
    redis.call("ZREM", key, member)
  end
end

-- A lapsed lease: the entry goes to this consumer with its delivery count incremented.
local function reclaim(queue, member)
  local priority, entry, deliveries = parse(member)
  local key = stream_key(queue, priority)
  redis.call("ZREM", leases_key(queue), member)
  local got = redis.pcall("XCLAIM", key, GROUP, consumer, 0, entry)
  if type(got) ~= "table" or got.err or #got == 0 then
    -- Not in the pending list (the group was recreated): the entry itself is what counts.
    got = redis.call("XRANGE", key, entry, entry)
  end
  if #got > 0 then lease(queue, priority, entry, deliveries + 1, got[1][2]) end
end

local function read_new(queue, priority)
  local key = stream_key(queue, priority)
  if redis.call("EXISTS", key) == 0 then return end
  local args = {"XREADGROUP", "GROUP", GROUP, consumer, "COUNT", remaining, "STREAMS", key, ">"}
  local got = redis.pcall(unpack(args))
  if type(got) == "table" and got.err then
    if not string.find(got.err, "NOGROUP", 1, true) then error(got) end
    -- A stream without its group (first use, or restored after a restart): read from the start.
    redis.call("XGROUP", "CREATE", key, GROUP, "0")
    got = redis.call(unpack(args))
  end
  if not got then return end
  for _, item in ipairs(got[1][2]) do lease(queue, priority, item[1], 1, item[2]) end
end

local function fetch_queue(queue)
  promote(queue)
  local lapsed = redis.call(
    "ZRANGEBYSCORE", leases_key(queue), "-inf", ARGV[2], "LIMIT", 0, remaining)
  local by_priority = {}
  for _, member in ipairs(lapsed) do
    local priority = tonumber(string.sub(member, 1, 1))
    by_priority[priority] = by_priority[priority] or {}
    table.insert(by_priority[priority], member)
  end
  -- Within a priority, lapsed entries are older than new ones: they go first.
  for priority = 9, 0, -1 do
    for _, member in ipairs(by_priority[priority] or {}) do
      if remaining > 0 then reclaim(queue, member) end
    end
    if remaining > 0 then read_new(queue, priority) end
  end
end

local function next_due()
  local due = nil
  for i = first_queue, #ARGV do
    for _, key in ipairs({delayed_key(ARGV[i]), leases_key(ARGV[i])}) do
      local first = redis.call("ZRANGE", key, 0, 0, "WITHSCORES")
      if first[2] and (due == nil or tonumber(first[2]) < tonumber(due)) then due = first[2] end
    end
  end
  return due or ""
end

for i = first_queue, #ARGV do
  if remaining <= 0 then break end
  fetch_queue(ARGV[i])
end
if #out == 1 then out[1] = next_due() end
return out

-- script: extend
-- ARGV: ns, lease_until, then (queue, member) pairs. Returns 1 per renewed lease, 0 per stale.
local out = {}
for i = 3, #ARGV, 2 do
  local key = leases_key(ARGV[i])
  if redis.call("ZSCORE", key, ARGV[i + 1]) then
    redis.call("ZADD", key, ARGV[2], ARGV[i + 1])
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out

-- script: ack
-- ARGV: ns, then (queue, member) pairs. Deletes each entry (XACK + XDEL) still held; 1/0 each.
local out = {}
for i = 2, #ARGV, 2 do out[#out + 1] = take(ARGV[i], ARGV[i + 1]) and 1 or 0 end
return out

-- script: requeue
-- ARGV: ns, now, queue, member, id, body, eta or ''. Returns 1, or 0 for a stale receipt.
local queue = ARGV[3]
local priority = take(queue, ARGV[4])
if not priority then return 0 end
place(queue, priority, ARGV[5], ARGV[6], ARGV[7], tonumber(ARGV[2]))
wake(queue, 1)
return 1

-- script: dead_letter
-- ARGV: ns, queue, member, id, reason, task, attempt, dead_at, error JSON, body (task and error
-- '' when absent). A dead letter of the same id is replaced. Returns 1, or 0 for a stale receipt.
local queue = ARGV[2]
local priority = take(queue, ARGV[3])
if not priority then return 0 end
local id, dead_at = ARGV[4], ARGV[8]
local key = dead_letter_key(id)
local previous = redis.call("HGET", key, "queue")
if previous then redis.call("ZREM", queue_dead_letters_key(previous), id) end
redis.call("DEL", key)
redis.call("HSET", key, "queue", queue, "priority", priority, "reason", ARGV[5], "task", ARGV[6],
  "attempt", ARGV[7], "dead_at", dead_at, "error", ARGV[9], "body", ARGV[10])
redis.call("ZADD", dead_letters_key(), dead_at, id)
redis.call("ZADD", queue_dead_letters_key(queue), dead_at, id)
return 1

-- script: replay
-- ARGV: ns, now, id, body, eta or ''. Returns 1, or 0 when there is no such dead letter.
local id = ARGV[3]
local key = dead_letter_key(id)
local found = redis.call("HMGET", key, "queue", "priority")
local queue, priority = found[1], found[2]
if not queue then return 0 end
redis.call("DEL", key)
redis.call("ZREM", dead_letters_key(), id)
redis.call("ZREM", queue_dead_letters_key(queue), id)
place(queue, priority, id, ARGV[4], ARGV[5], tonumber(ARGV[2]))
wake(queue, 1)
return 1

-- script: dead_letters
-- ARGV: ns, queue ('' for all), limit (> 0). Returns {id, {field, value, ...}, ...}, oldest first.
local index = ARGV[2] == "" and dead_letters_key() or queue_dead_letters_key(ARGV[2])
local out = {}
for _, id in ipairs(redis.call("ZRANGE", index, 0, tonumber(ARGV[3]) - 1)) do
  out[#out + 1] = id
  out[#out + 1] = redis.call("HGETALL", dead_letter_key(id))
end
return out

-- script: purge_dead_letters
-- ARGV: ns, queue ('' for all), batch. Deletes up to `batch` dead letters; returns how many.
local index = ARGV[2] == "" and dead_letters_key() or queue_dead_letters_key(ARGV[2])
local ids = redis.call("ZRANGE", index, 0, tonumber(ARGV[3]) - 1)
for _, id in ipairs(ids) do
  local key = dead_letter_key(id)
  local queue = redis.call("HGET", key, "queue")
  if queue then redis.call("ZREM", queue_dead_letters_key(queue), id) end
  redis.call("DEL", key)
  redis.call("ZREM", dead_letters_key(), id)
  redis.call("ZREM", index, id)
end
return #ids

-- script: delete_dead_letters
-- ARGV: ns, id... Deletes these dead letters and their index entries, as purge_dead_letters
-- does; unknown ids are skipped. Returns how many existed.
local deleted = 0
for i = 2, #ARGV do
  local id = ARGV[i]
  local key = dead_letter_key(id)
  local queue = redis.call("HGET", key, "queue")
  if queue then
    redis.call("ZREM", queue_dead_letters_key(queue), id)
    deleted = deleted + 1
  end
  redis.call("DEL", key)
  redis.call("ZREM", dead_letters_key(), id)
end
return deleted

-- script: stats
-- ARGV: ns, now, queue... Returns {pending, delayed, in_flight, dead} per queue. A lapsed lease
-- and a due delayed message count as pending before a fetch moves them.
local now = ARGV[2]
local out = {}
for i = 3, #ARGV do
  local queue = ARGV[i]
  local stored = 0
  for priority = 0, 9 do stored = stored + redis.call("XLEN", stream_key(queue, priority)) end
  local leased = redis.call("ZCARD", leases_key(queue))
  local lapsed = redis.call("ZCOUNT", leases_key(queue), "-inf", now)
  local delayed = redis.call("ZCARD", delayed_key(queue))
  local due = redis.call("ZCOUNT", delayed_key(queue), "-inf", now)
  local dead = redis.call("ZCARD", queue_dead_letters_key(queue))
  out[#out + 1] = {stored - leased + lapsed + due, delayed - due, leased - lapsed, dead}
end
return out

-- script: forget_consumer
-- ARGV: ns, consumer, queue... Deletes the consumer from each stream's group where it holds no
-- pending entry (a clean shutdown), so groups do not collect the names of stopped workers.
for i = 3, #ARGV do
  for priority = 0, 9 do
    local key = stream_key(ARGV[i], priority)
    if redis.call("EXISTS", key) == 1 then
      local held = redis.pcall("XPENDING", key, GROUP, "-", "+", 1, ARGV[2])
      if type(held) == "table" and not held.err and #held == 0 then
        redis.pcall("XGROUP", "DELCONSUMER", key, GROUP, ARGV[2])
      end
    end
  end
end
return 0
