--[[
  Closes one customer's hour early, for that customer only (the final flush after unsubscribe-pending:
  AWS takes a buyer's last records for about an hour, so its open hour cannot wait for the partition's
  schedule). In one atomic step, like finalizeHour.lua for a whole hour: stores the customer's frozen
  records for the hour, the model state they leave, notes the cut with the checkpoint it was made at, and
  removes the customer's usage from the hour's aggregates, so the hour's own close later leaves it out.
  Events of the customer for the hour after that checkpoint are carried forward by the batch's caller.

  KEYS[1] fence  KEYS[2] checkpoint  KEYS[3] aggregates(hour)  KEYS[4] finalized(hour)  KEYS[5] cuts(hour)
  KEYS[6] cut(hour, customer)  KEYS[7] pending cuts  KEYS[8] model state  KEYS[9] due

  ARGV[1] fencing token  ARGV[2] checkpoint read ('' when none)  ARGV[3] hourMs
  ARGV[4] cut scope (a customer, or customer␟product: keys.ts cutScope)
  ARGV[5] F, then F aggregate fields of the customer to remove from the hour
  then R, then R pairs (field, frozen record); then S, then S triples (field, state or '', owes '1' | '0')

  Returns { 1 } cut now, { 0 } nothing to do (the hour is frozen whole, or the customer cut already),
  { -1 } fenced, { -4 } state gone, { -5 } state moved on since the read (read again).
]]
local fence = redis.call('GET', KEYS[1])
if not fence then return { -4 } end
if fence ~= ARGV[1] then return { -1 } end
local hour, customer = ARGV[3], ARGV[4]
if redis.call('EXISTS', KEYS[4]) == 1 or redis.call('HEXISTS', KEYS[5], customer) == 1 then
  return { 0 }
end
if (redis.call('GET', KEYS[2]) or '') ~= ARGV[2] then return { -5 } end

local f0 = 5
local fields = tonumber(ARGV[f0])
for i = 1, fields do redis.call('HDEL', KEYS[3], ARGV[f0 + i]) end
local r0 = f0 + fields + 1
local records = tonumber(ARGV[r0])
local s0 = r0 + records * 2 + 1
local states = {}
for i = 1, tonumber(ARGV[s0]) do
  states[i] = { ARGV[s0 + (i - 1) * 3 + 1], ARGV[s0 + (i - 1) * 3 + 2], ARGV[s0 + (i - 1) * 3 + 3] }
end
local through = ARGV[2] == '' and '-1' or ARGV[2]
local frozen = { '__hour', hour, '__through', through, '__customer', customer, '__states', cjson.encode(states) }
for i = 1, records do
  frozen[#frozen + 1] = ARGV[r0 + (i - 1) * 2 + 1]
  frozen[#frozen + 1] = ARGV[r0 + (i - 1) * 2 + 2]
end
for i = 1, #frozen, 1000 do
  redis.call('HSET', KEYS[6], unpack(frozen, i, math.min(i + 999, #frozen)))
end
for i = 1, #states do
  local field, state, owes = states[i][1], states[i][2], states[i][3]
  if state == '' then redis.call('HDEL', KEYS[8], field) else redis.call('HSET', KEYS[8], field, state) end
  if owes == '1' then redis.call('SADD', KEYS[9], field) else redis.call('SREM', KEYS[9], field) end
end
redis.call('HSET', KEYS[5], customer, through)
redis.call('ZADD', KEYS[7], hour, hour .. '|' .. customer)
return { 1 }
