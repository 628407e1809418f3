--[[
  Design C of docs/state-v2.md (measured by deploy/bench/dedupe-designs.ts, not used by meterline): packed
  ARGV, Redis dedupes in a per-hour SET of 16-byte binary id hashes.
  KEYS[1] aggregates   KEYS[2] seen
  ARGV[1] ttl (s), then per aggregate: field, hashes (16 bytes per event), micro-units (int64 LE per event)
]]
local CHUNK = 4000
local applied = 0
for a = 2, #ARGV, 3 do
  local field, hashes, micros = ARGV[a], ARGV[a + 1], ARGV[a + 2]
  local n = #hashes / 16
  local ids = {}
  for e = 1, n do ids[e] = string.sub(hashes, (e - 1) * 16 + 1, e * 16) end
  local known = {}
  for from = 1, n, CHUNK do
    local r = redis.call('SMISMEMBER', KEYS[2], unpack(ids, from, math.min(from + CHUNK - 1, n)))
    for i = 1, #r do known[from + i - 1] = r[i] end
  end
  local delta, fresh, inBatch = 0, {}, {}
  for e = 1, n do
    if known[e] == 0 and not inBatch[ids[e]] then
      inBatch[ids[e]] = true
      fresh[#fresh + 1] = ids[e]
      delta = delta + struct.unpack('<i8', micros, (e - 1) * 8 + 1)
    end
  end
  for from = 1, #fresh, CHUNK do
    redis.call('SADD', KEYS[2], unpack(fresh, from, math.min(from + CHUNK - 1, #fresh)))
  end
  if #fresh > 0 then redis.call('HINCRBY', KEYS[1], field, string.format('%d', delta)) end
  applied = applied + #fresh
end
redis.call('EXPIRE', KEYS[2], ARGV[1])
return applied
