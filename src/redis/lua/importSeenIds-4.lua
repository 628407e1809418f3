--[[
  Moves event ids of one hour from the dedupe set kept before the packed logs (`seen(hour)`, a SET of id
  strings) into the hour's dedupe log, so an upgraded processor still refuses an event counted before
  the upgrade. The caller reads a chunk of the set, hashes the ids (state/dedupe-index.ts) and sends both:
  in one atomic step the packed hashes become one log entry and the ids leave the set. A crash between two
  chunks leaves the rest in the set, for the next claim; the set is gone once it is empty.

  KEYS[1] fence  KEYS[2] seen(hour)  KEYS[3] dedupe log(hour)  KEYS[4] dedupe hours
  ARGV[1] fencing token  ARGV[2] hourMs  ARGV[3] the ids' hashes, 16 bytes each, packed
  ARGV[4] wall clock, ms  ARGV[5] dedupe ttl, ms  then the ids (as the set holds them)

  The log lives as long as the set would have (its remaining ttl; the dedupe ttl if it had none), and the
  hour is listed as written when that ttl was last set, so the index forgets it when Redis would.
  Returns the ids moved, 0 when the set is gone, -1 when fenced, -4 when the partition's state is gone.
]]
local fence = redis.call('GET', KEYS[1])
if not fence then return -4 end
if fence ~= ARGV[1] then return -1 end
local left = redis.call('PTTL', KEYS[2])
if left == -2 then return 0 end
local ttl = tonumber(ARGV[5])
if left < 0 or left > ttl then left = ttl end
local now = tonumber(ARGV[4])
if #ARGV[3] > 0 then redis.call('RPUSH', KEYS[3], ARGV[3]) end
if redis.call('PTTL', KEYS[3]) < left then redis.call('PEXPIRE', KEYS[3], left) end
local writtenAt = now - (ttl - left)
local listed = tonumber(redis.call('ZSCORE', KEYS[4], ARGV[2]) or '-1')
if writtenAt > listed then redis.call('ZADD', KEYS[4], writtenAt, ARGV[2]) end
if redis.call('PTTL', KEYS[4]) < 2 * ttl then redis.call('PEXPIRE', KEYS[4], 2 * ttl) end
local moved = #ARGV - 5
for i = 6, #ARGV, 4000 do
  redis.call('SREM', KEYS[2], unpack(ARGV, i, math.min(i + 3999, #ARGV)))
end
return moved
