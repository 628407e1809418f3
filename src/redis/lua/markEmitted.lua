--[[
  Marks a finalized hour as emitted to the submission topic, after the producer's ack.

  KEYS[1] fence  KEYS[2] pending emit
  ARGV[1] fencing token  ARGV[2] hourMs
  Returns 1, or -1 when fenced.
]]
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return -1
end
redis.call('ZREM', KEYS[2], ARGV[2])
return 1
