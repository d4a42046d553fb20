-- The Redis enqueue when broker and result backend share one Redis (stemrun/shared_store.py):
-- create the status records and publish the messages of the new ones in one script, so no crash
-- can leave a record without its message. Runs after the preludes of the broker's scripts
-- (brokers/redis_streams.lua: place, tally, wake_tallied) and the backend's (backends/redis.lua:
-- insert); it touches only the keys those files list.

-- script: record_and_publish
-- KEYS: status keys. ARGV: broker namespace, now, then per key (json, expires_at, ttl_ms, queue,
-- priority, id, body, eta). Returns 1/0 per key: inserted (and published) or already there.
local now = tonumber(ARGV[2])
local counts, order, out = {}, {}, {}
for i, key in ipairs(KEYS) do
  local base = 3 + (i - 1) * 8
  out[i] = insert(key, ARGV[base], ARGV[base + 1], ARGV[base + 2], now)
  if out[i] == 1 then
    place(ARGV[base + 3], ARGV[base + 4], ARGV[base + 5], ARGV[base + 6], ARGV[base + 7], now)
    tally(counts, order, ARGV[base + 3])
  end
end
wake_tallied(counts, order)
return out
