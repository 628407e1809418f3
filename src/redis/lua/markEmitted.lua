--[[
  Marks a finalized hour as emitted to the submission topic, after the producer's ack.

  KEYS[1] fence  KEYS[2] pending emit
  ARGV[1] fencing token  ARGV[2] hourMs
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
return 1
