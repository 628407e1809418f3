--[[
  Applies one partition batch atomically: dedupes event ids, adds the pre-aggregated quantities, and
  stores the partition checkpoint. Either all of it lands or none of it does, so the event ids are never
  claimed before their quantities are durable.

  KEYS[1] checkpoint   KEYS[2] fence   KEYS[3] open hours   KEYS[4] late audit
  then, per hour group g = 1..G:  aggregates(hour), seen(hour), finalized(hour)

  ARGV[1] fencing token        ARGV[2] first offset of the batch   ARGV[3] last offset of the batch
  ARGV[4] dedupe ttl (s)       ARGV[5] finalized-hour ttl (s)      ARGV[6] G (hour groups)
  ARGV[7] index of the carry-forward group (the open hour late events move into)
  ARGV[8] late audit cap
  then per group: hourMs, A (aggregates in the group), then per aggregate:
    field, op ('s' sum | 'm' max), E (events), then E pairs of (event id, micro-units)

  Returns { applied events, duplicate events, carried late events }
  or { -1 } when the fencing token is stale, { -2, checkpoint } when the batch is at or below it.
]]
local token = ARGV[1]
local fence = redis.call('GET', KEYS[2])
if fence ~= token then
  return { -1 }
end
local firstOffset = tonumber(ARGV[2])
local checkpoint = redis.call('GET', KEYS[1])
if checkpoint and firstOffset <= tonumber(checkpoint) then
  return { -2, tonumber(checkpoint) }
end

local dedupeTtl = tonumber(ARGV[4])
local groups = tonumber(ARGV[6])
local carryGroup = tonumber(ARGV[7])
local auditCap = tonumber(ARGV[8])
local carryAggKey = KEYS[4 + (carryGroup - 1) * 3 + 1]
local carryHour = nil

-- Locate the carry-forward hour first: late events of any group may move into it.
do
  local a = 9
  for g = 1, groups do
    local hour = ARGV[a]
    if g == carryGroup then carryHour = hour end
    local aggs = tonumber(ARGV[a + 1])
    a = a + 2
    for _ = 1, aggs do
      local events = tonumber(ARGV[a + 2])
      a = a + 3 + events * 2
    end
  end
end

local applied, duplicates, carried = 0, 0, 0
local a = 9
for g = 1, groups do
  local hour = ARGV[a]
  local aggKey = KEYS[4 + (g - 1) * 3 + 1]
  local seenKey = KEYS[4 + (g - 1) * 3 + 2]
  local finKey = KEYS[4 + (g - 1) * 3 + 3]
  local aggs = tonumber(ARGV[a + 1])
  a = a + 2
  local finalized = redis.call('EXISTS', finKey) == 1
  local targetKey, targetHour = aggKey, hour
  if finalized then
    targetKey, targetHour = carryAggKey, carryHour
  end
  local touched = false
  for _ = 1, aggs do
    local field, op, events = ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2])
    a = a + 3
    local delta, peak = 0, -1
    for e = 1, events do
      local id, micros = ARGV[a], tonumber(ARGV[a + 1])
      a = a + 2
      if redis.call('SADD', seenKey, id) == 1 then
        applied = applied + 1
        delta = delta + micros
        if micros > peak then peak = micros end
        if finalized then
          carried = carried + 1
          redis.call('LPUSH', KEYS[4], id .. '|' .. field .. '|' .. hour .. '|' .. targetHour)
        end
      else
        duplicates = duplicates + 1
      end
    end
    if peak >= 0 then
      touched = true
      if op == 'm' then
        local current = tonumber(redis.call('HGET', targetKey, field) or '-1')
        if peak > current then redis.call('HSET', targetKey, field, string.format('%d', peak)) end
      else
        redis.call('HINCRBY', targetKey, field, string.format('%d', delta))
      end
    end
  end
  redis.call('EXPIRE', seenKey, dedupeTtl)
  if touched then
    redis.call('ZADD', KEYS[3], targetHour, targetHour)
  end
end
if carried > 0 then redis.call('LTRIM', KEYS[4], 0, auditCap - 1) end

redis.call('SET', KEYS[1], ARGV[3])
return { applied, duplicates, carried }
