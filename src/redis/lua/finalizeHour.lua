--[[
  Freezes one hour of one partition: turns each aggregate into the integer quantity AWS will bill, carries
  the fractional remainder of sums to the next hour of the same customer and dimension, and marks the hour
  "finalized, not yet emitted". Idempotent: a second call returns the frozen quantities unchanged.

  KEYS[1] fence  KEYS[2] aggregates(hour)  KEYS[3] finalized(hour)  KEYS[4] open hours
  KEYS[5] pending emit  KEYS[6] carry

  ARGV[1] fencing token  ARGV[2] hourMs  ARGV[3] finalized-hour ttl (s)  ARGV[4] micro-units per unit
  ARGV[5] largest quantity AWS takes  ARGV[6] N, then N pairs (dimension, op) with op 's' | 'm'

  Returns a flat list field, quantity, field, quantity ... (the frozen hour), { -1 } when fenced, or { -4 } when the partition's state is gone.
]]
local fence = redis.call('GET', KEYS[1])
if not fence then
  return { -4 }
end
if fence ~= ARGV[1] then
  return { -1 }
end
local hour = ARGV[2]
if redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('ZREM', KEYS[4], hour)
  return redis.call('HGETALL', KEYS[3])
end

local unit = tonumber(ARGV[4])
local maxQuantity = tonumber(ARGV[5])
local ops = {}
for i = 1, tonumber(ARGV[6]) do
  ops[ARGV[6 + (i - 1) * 2 + 1]] = ARGV[6 + (i - 1) * 2 + 2]
end

local frozen = { '__hour', hour }
local entries = redis.call('HGETALL', KEYS[2])
for i = 1, #entries, 2 do
  local field, micros = entries[i], tonumber(entries[i + 1])
  local sep = string.find(field, '\031', 1, true)
  local dimension = string.sub(field, sep + 1)
  local quantity
  if ops[dimension] == 'm' then
    -- A peak is billed whole: a fractional seat is a seat.
    quantity = math.ceil(micros / unit)
    if quantity > maxQuantity then quantity = maxQuantity end
  else
    local total = micros + tonumber(redis.call('HGET', KEYS[6], field) or '0')
    quantity = math.floor(total / unit)
    if quantity > maxQuantity then quantity = maxQuantity end
    -- Whatever is not billed now (the fraction, or the excess over AWS's limit) moves to the next hour.
    local remainder = total - quantity * unit
    if remainder > 0 then
      redis.call('HSET', KEYS[6], field, string.format('%d', remainder))
    else
      redis.call('HDEL', KEYS[6], field)
    end
  end
  frozen[#frozen + 1] = field
  frozen[#frozen + 1] = string.format('%d', quantity)
end

-- One HSET per chunk: unpack() of a large table overflows Lua's C stack.
for i = 1, #frozen, 1000 do
  redis.call('HSET', KEYS[3], unpack(frozen, i, math.min(i + 999, #frozen)))
end
redis.call('EXPIRE', KEYS[3], tonumber(ARGV[3]))
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[4], hour)
redis.call('ZADD', KEYS[5], hour, hour)
return frozen
