--[[
  Applies a registration or a lifecycle event to one entry: a product subscription of the customer
  directory (field tenant␟productCode), or a customers-file tenant's status.
  Events arrive out of order and more than once (SNS, EventBridge): an event older than the one the
  entry already reflects changes nothing, so a late subscribe-success cannot undo an unsubscribe.

  KEYS[1] entries (hash: field → entry JSON)  KEYS[2] index (hash: AWS identity → field)
  ARGV[1] the entry's field  ARGV[2] patch (JSON object merged into the entry)  ARGV[3] event time (ms)
  ARGV[4] 1 = create the entry if missing, 0 = only update an existing one
  ARGV[5..] index fields that name this entry
  Returns 1 when applied, 0 when the entry already reflects a newer event, -1 when missing (ARGV[4] = 0).
]]
local current = redis.call('HGET', KEYS[1], ARGV[1])
local entry
if current then
  entry = cjson.decode(current)
  if entry.eventMs and tonumber(entry.eventMs) > tonumber(ARGV[3]) then
    return 0
  end
elseif ARGV[4] == '1' then
  entry = {}
else
  return -1
end
for k, v in pairs(cjson.decode(ARGV[2])) do
  entry[k] = v
end
entry.eventMs = tonumber(ARGV[3])
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(entry))
for i = 5, #ARGV do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[1])
end
return 1
