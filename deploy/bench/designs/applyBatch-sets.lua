--[[
  Applies one partition batch atomically: dedupes event ids, adds the pre-aggregated quantities, stores
  the partition checkpoint and advances the partition's event time. Either all of it lands or none of it
  does, so an event id is never claimed before its quantity is durable.

  The caller decides where each event's quantity goes (hourly-window-store.ts), from the hours frozen on
  the partition and the offset each was frozen through: its own hour; the first hour after it not frozen
  before the event's offset (a late event, carried forward); or nowhere (a replay of an event a frozen
  record already counts: only its id is remembered). The same input and the same frozen hours give the
  same answer, so a replay after a state loss puts every unit where it went the first time.

  KEYS[1] checkpoint   KEYS[2] fence   KEYS[3] open hours   KEYS[4] late audit   KEYS[5] partition time
  then, per group g = 1..G:  aggregates(target), seen(event hour), finalized(target)

  ARGV[1] fencing token        ARGV[2] the checkpoint the task holds ('' when none)
  ARGV[3] last offset of the batch
  ARGV[4] dedupe ttl (s)       ARGV[5] G (groups)       ARGV[6] late audit cap
  ARGV[7] highest event time in the batch, ms ('' when none)      ARGV[8] wall clock, ms
  then per group: event hourMs, target hourMs ('' when counted already), A (aggregates in the group),
    then per aggregate: field, op ('s' sum | 'm' max), E (events), then E pairs of (event id, micro-units)

  Redis's checkpoint is the truth, checked on every batch: the task's own must equal it.

  Returns { applied events, duplicate events, carried late events, events counted already }, or
    { -1 } the fencing token is stale (a newer owner claimed the partition),
    { -2, checkpoint } Redis is ahead of the task (a reply was lost): records up to it are applied,
    { -3, hour } a target hour is finalized (the caller's view of frozen hours is out of date),
    { -4 } the partition's state is gone (Redis lost its data): recover before writing,
    { -6, checkpoint or '' } Redis is behind the task (failover to a lagging replica, an older
      snapshot): its fence or checkpoint predates what the task saw; re-claim and replay from it.
]]

-- Offsets are decimal strings up to 2^63: compare them as such, not as doubles.
local function cmp(a, b)
  if #a ~= #b then return #a < #b and -1 or 1 end
  if a == b then return 0 end
  return a < b and -1 or 1
end

local token = ARGV[1]
local fence = redis.call('GET', KEYS[2])
if not fence then
  return { -4 }
end
if fence ~= token then
  -- Tokens only grow: one below ours was issued before our claim, so Redis lost writes since.
  if cmp(fence, token) < 0 then return { -6, redis.call('GET', KEYS[1]) or '' } end
  return { -1 }
end
local held = ARGV[2]
local checkpoint = redis.call('GET', KEYS[1]) or ''
if checkpoint ~= held then
  if held == '' or (checkpoint ~= '' and cmp(checkpoint, held) > 0) then
    return { -2, checkpoint }
  end
  return { -6, checkpoint }
end

local G0 = 5
local A0 = 9
-- unpack() of more than ~8000 values overflows Lua's C stack.
local CHUNK = 4000
local dedupeTtl = tonumber(ARGV[4])
local groups = tonumber(ARGV[5])
local auditCap = tonumber(ARGV[6])

-- First pass, before any write: every target hour must still be open.
do
  local a = A0
  for g = 1, groups do
    local target = ARGV[a + 1]
    if target ~= '' and redis.call('EXISTS', KEYS[G0 + (g - 1) * 3 + 3]) == 1 then
      return { -3, tonumber(target) }
    end
    local aggs = tonumber(ARGV[a + 2])
    a = a + 3
    for _ = 1, aggs do
      local events = tonumber(ARGV[a + 2])
      a = a + 3 + events * 2
    end
  end
end

local applied, duplicates, carried, counted = 0, 0, 0, 0
local a = A0
for g = 1, groups do
  local hour, target = ARGV[a], ARGV[a + 1]
  local aggKey = KEYS[G0 + (g - 1) * 3 + 1]
  local seenKey = KEYS[G0 + (g - 1) * 3 + 2]
  local aggs = tonumber(ARGV[a + 2])
  a = a + 3
  local late = target ~= '' and target ~= hour
  local touched = false
  for _ = 1, aggs do
    local field, op, events = ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2])
    a = a + 3
    -- Which ids were counted before: one SMISMEMBER per chunk rather than one SADD per event.
    local ids = {}
    for e = 1, events do ids[e] = ARGV[a + (e - 1) * 2] end
    local known = {}
    for from = 1, events, CHUNK do
      local r = redis.call('SMISMEMBER', seenKey, unpack(ids, from, math.min(from + CHUNK - 1, events)))
      for i = 1, #r do known[from + i - 1] = r[i] end
    end
    local delta, peak, fresh, inBatch = 0, -1, {}, {}
    for e = 1, events do
      -- New to Redis and not already earlier in this batch (a resend inside one fetch).
      if known[e] == 0 and not inBatch[ids[e]] then
        inBatch[ids[e]] = true
        fresh[#fresh + 1] = ids[e]
        if target == '' then
          counted = counted + 1
        else
          local micros = tonumber(ARGV[a + (e - 1) * 2 + 1])
          applied = applied + 1
          delta = delta + micros
          if micros > peak then peak = micros end
          if late then
            carried = carried + 1
            redis.call('LPUSH', KEYS[4], ids[e] .. '|' .. field .. '|' .. hour .. '|' .. target)
          end
        end
      else
        duplicates = duplicates + 1
      end
    end
    a = a + events * 2
    for from = 1, #fresh, CHUNK do
      redis.call('SADD', seenKey, unpack(fresh, from, math.min(from + CHUNK - 1, #fresh)))
    end
    if peak >= 0 then
      touched = true
      if op == 'm' then
        local current = tonumber(redis.call('HGET', aggKey, field) or '-1')
        if peak > current then redis.call('HSET', aggKey, field, string.format('%d', peak)) end
      else
        redis.call('HINCRBY', aggKey, field, string.format('%d', delta))
      end
    end
  end
  redis.call('EXPIRE', seenKey, dedupeTtl)
  if touched then
    redis.call('ZADD', KEYS[3], target, target)
  end
end
if carried > 0 then redis.call('LTRIM', KEYS[4], 0, auditCap - 1) end

if ARGV[7] ~= '' then
  local previous = tonumber(redis.call('HGET', KEYS[5], 'maxEventTime') or '0')
  if tonumber(ARGV[7]) > previous then redis.call('HSET', KEYS[5], 'maxEventTime', ARGV[7]) end
  redis.call('HSET', KEYS[5], 'activeAt', ARGV[8])
end
redis.call('SET', KEYS[1], ARGV[3])
return { applied, duplicates, carried, counted }
