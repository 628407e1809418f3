--[[
  Links a seller's own tenant id to a product subscription: moves the directory entry from the tenant id
  registration gave it (the AWS account id) to the seller's, with every index field that named it, in one
  step, so usage under the new id is billed with the subscription's license from the next lookup on.

  KEYS[1] subscriptions (hash: tenant␟product → entry JSON)  KEYS[2] subscription index (identity → field)
  KEYS[3] the directory's change counter
  ARGV[1] the entry's field now  ARGV[2] its field after  ARGV[3] the seller's tenant id
  ARGV[4..] the entry's index fields
  Returns 1 when linked, -1 when there is no entry at ARGV[1], -2 when ARGV[2] already holds a subscription.
]]
local current = redis.call('HGET', KEYS[1], ARGV[1])
if not current then
  return -1
end
if redis.call('HEXISTS', KEYS[1], ARGV[2]) == 1 then
  return -2
end
local entry = cjson.decode(current)
entry.tenant = ARGV[3]
redis.call('HSET', KEYS[1], ARGV[2], cjson.encode(entry))
redis.call('HDEL', KEYS[1], ARGV[1])
for i = 4, #ARGV do
  if redis.call('HGET', KEYS[2], ARGV[i]) == ARGV[1] then
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[2])
  end
end
redis.call('INCR', KEYS[3])
return 1
