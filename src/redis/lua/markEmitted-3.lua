--[[
  Marks a finalized hour as emitted to the submission topic, after the producer's ack (or as dead-lettered,
  when it could not be emitted in time). Only now do its frozen records start to expire: while the hour
  waits for its emit they must stay. A TTL already set (a repeated mark) is left as it is.

  KEYS[1] fence  KEYS[2] pending emit  KEYS[3] finalized(hour)
  ARGV[1] fencing token  ARGV[2] hourMs  ARGV[3] finalized ttl (s)
  Returns 1, -1 when fenced, or -4 when the partition's state is gone.
]]
local fence = redis.call('GET', KEYS[1])
if not fence then
  return -4
end
if fence ~= ARGV[1] then
  return -1
end
redis.call('ZREM', KEYS[2], ARGV[2])
if redis.call('TTL', KEYS[3]) == -1 then
  redis.call('EXPIRE', KEYS[3], tonumber(ARGV[3]))
end
return 1
