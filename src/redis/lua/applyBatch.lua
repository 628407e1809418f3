--[[
  Applies one partition batch atomically: adds the pre-aggregated quantities of the events new to the
  partition, adds their id hashes to the dedupe logs, stores the partition checkpoint and advances the
  partition's event time. Either all of it lands or none of it does, so an event id is never remembered
  before its quantity is durable.

  Which events are new is decided by the caller's dedupe index (state/dedupe-index.ts), restored from
  these logs whenever it may differ from them: the checkpoint check below proves that no batch landed
  since the caller's index last matched Redis. Redis only stores 16 bytes per new event.

  The caller decides where each event's quantity goes (hourly-window-store.ts), from the hours frozen on
  the partition and the offset each was frozen through: its own hour; the first hour after it not frozen
  before the event's offset (a late event, carried forward); or nowhere (a replay of an event a frozen
  record already counts: only its id is remembered). The same input and the same frozen hours give the
  same answer, so a replay after a state loss puts every unit where it went the first time.

  KEYS[1] checkpoint   KEYS[2] fence   KEYS[3] open hours   KEYS[4] late audit   KEYS[5] partition time
  KEYS[6] dedupe hours (member: hour with a dedupe log, score: when it was last written)
  then, per group g = 1..G:  aggregates(target), dedupe log(event hour), finalized(target)

  ARGV[1] fencing token        ARGV[2] the checkpoint the task holds ('' when none)
  ARGV[3] last offset of the batch
  ARGV[4] dedupe ttl (s)       ARGV[5] G (groups)       ARGV[6] late audit cap
  ARGV[7] highest event time in the batch, ms ('' when none)      ARGV[8] wall clock, ms
  ARGV[9] duplicate events (refused by the caller's index)
  then per group: event hourMs, target hourMs ('' when counted already), the new events' id hashes
    (16 bytes each, packed), A (aggregates in the group),
    then per aggregate: field, op ('s' sum | 'm' max), E (new events), their sum or peak in micro-units,
      and, for a late group only (target neither '' nor the event hour), the E event ids (late audit)

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

local G0 = 6
local A0 = 10
local dedupeTtl = tonumber(ARGV[4])
local groups = tonumber(ARGV[5])
local auditCap = tonumber(ARGV[6])
local now = tonumber(ARGV[8])

local function isLate(hour, target) return target ~= '' and target ~= hour end

-- First pass, before any write: every target hour must still be open.
do
  local a = A0
  for g = 1, groups do
    local target = ARGV[a + 1]
    if target ~= '' and redis.call('EXISTS', KEYS[G0 + (g - 1) * 3 + 3]) == 1 then
      return { -3, tonumber(target) }
    end
    local late = isLate(ARGV[a], target)
    local aggs = tonumber(ARGV[a + 3])
    a = a + 4
    for _ = 1, aggs do
      local events = tonumber(ARGV[a + 2])
      a = a + 4 + (late and events or 0)
    end
  end
end

local applied, carried, counted = 0, 0, 0
local a = A0
for g = 1, groups do
  local hour, target, hashes = ARGV[a], ARGV[a + 1], ARGV[a + 2]
  local aggKey = KEYS[G0 + (g - 1) * 3 + 1]
  local logKey = KEYS[G0 + (g - 1) * 3 + 2]
  local aggs = tonumber(ARGV[a + 3])
  a = a + 4
  local late = isLate(hour, target)
  local touched = false
  for _ = 1, aggs do
    local field, op, events, value = ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2]), ARGV[a + 3]
    a = a + 4
    if events > 0 then
      if target == '' then
        counted = counted + events
      else
        applied = applied + events
        touched = true
        if op == 'm' then
          local current = tonumber(redis.call('HGET', aggKey, field) or '-1')
          if tonumber(value) > current then redis.call('HSET', aggKey, field, value) end
        else
          redis.call('HINCRBY', aggKey, field, value)
        end
        if late then
          carried = carried + events
          for e = 0, events - 1 do
            redis.call('LPUSH', KEYS[4], ARGV[a + e] .. '|' .. field .. '|' .. hour .. '|' .. target)
          end
        end
      end
    end
    if late then a = a + events end
  end
  -- Kept as long as the sets of ids were: the dedupe ttl after the hour's last batch.
  -- One list entry per batch: an entry is allocated at its size, where APPEND's room to grow costs up to 2x.
  if #hashes > 0 then redis.call('RPUSH', logKey, hashes) end
  if redis.call('EXPIRE', logKey, dedupeTtl) == 1 then redis.call('ZADD', KEYS[6], now, hour) end
  if touched then
    redis.call('ZADD', KEYS[3], target, target)
  end
end
if carried > 0 then redis.call('LTRIM', KEYS[4], 0, auditCap - 1) end
-- Hours whose logs expired leave the index of hours: after twice the ttl, so a caller's clock ahead of
-- Redis's never drops an hour whose log is still there (a restore skips logs that are gone).
redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', '(' .. string.format('%d', now - 2 * dedupeTtl * 1000))
redis.call('EXPIRE', KEYS[6], 2 * dedupeTtl)

if ARGV[7] ~= '' then
  local previous = tonumber(redis.call('HGET', KEYS[5], 'maxEventTime') or '0')
  if tonumber(ARGV[7]) > previous then redis.call('HSET', KEYS[5], 'maxEventTime', ARGV[7]) end
  redis.call('HSET', KEYS[5], 'activeAt', ARGV[8])
end
redis.call('SET', KEYS[1], ARGV[3])
return { applied, tonumber(ARGV[9]), carried, counted }
