--[[
  Freezes one hour of one partition in one atomic step: stores the frozen records the commit stage
  computed, the metering-model state they leave behind, and marks the hour "finalized, not yet emitted".
  The frozen records get no TTL here: they must outlive any emit failure, and start to expire only once
  the hour is emitted or dead-lettered (markEmitted.lua).
  The records were computed from the aggregates and state read at checkpoint ARGV[2]; if the partition
  moved on since (it cannot while the task holds its queue, but a bug must not double-apply a model),
  nothing is written and the caller reads again. A finalized hour never changes: a second call is a no-op.

  KEYS[1] fence  KEYS[2] checkpoint  KEYS[3] aggregates(hour)  KEYS[4] finalized(hour)  KEYS[5] open hours
  KEYS[6] pending emit  KEYS[7] model state  KEYS[8] due  KEYS[9] closed-through

  ARGV[1] fencing token  ARGV[2] checkpoint read ('' when none)  ARGV[3] hourMs
  ARGV[4] R, then R pairs (field, frozen record)
  then S, then S triples (field, encoded state or '' to delete, '1' when it owes the next hour | '0')

  Besides the records, the frozen hour keeps `__through` (the checkpoint it was frozen at: events of the
  partition up to that offset are in it, later ones were carried forward) and `__states` (the model
  state it left, as a JSON list of [field, state, owes]): the changelog written before the emit carries
  both, so a Redis rebuilt after a loss knows the hour exactly. Real fields always hold a separator;
  these never do.

  Returns { 1 } frozen now, { 0 } already frozen, { -1 } fenced, { -4 } state gone, { -5 } state moved on.
]]
local fence = redis.call('GET', KEYS[1])
if not fence then
  return { -4 }
end
if fence ~= ARGV[1] then
  return { -1 }
end
local hour = ARGV[3]
if redis.call('EXISTS', KEYS[4]) == 1 then
  redis.call('ZREM', KEYS[5], hour)
  return { 0 }
end
if (redis.call('GET', KEYS[2]) or '') ~= ARGV[2] then
  return { -5 }
end

local records = tonumber(ARGV[4])
local s0 = 4 + records * 2 + 1
local states = {}
for i = 1, tonumber(ARGV[s0]) do
  states[i] = { ARGV[s0 + (i - 1) * 3 + 1], ARGV[s0 + (i - 1) * 3 + 2], ARGV[s0 + (i - 1) * 3 + 3] }
end
local frozen = {
  '__hour', hour,
  '__through', ARGV[2] == '' and '-1' or ARGV[2],
  -- cjson writes an empty table as {}: readers take it as no states.
  '__states', cjson.encode(states),
}
for i = 1, records do
  frozen[#frozen + 1] = ARGV[4 + (i - 1) * 2 + 1]
  frozen[#frozen + 1] = ARGV[4 + (i - 1) * 2 + 2]
end
-- One HSET per chunk: unpack() of a large table overflows Lua's C stack.
for i = 1, #frozen, 1000 do
  redis.call('HSET', KEYS[4], unpack(frozen, i, math.min(i + 999, #frozen)))
end

for i = 1, #states do
  local field, state, owes = states[i][1], states[i][2], states[i][3]
  if state == '' then
    redis.call('HDEL', KEYS[7], field)
  else
    redis.call('HSET', KEYS[7], field, state)
  end
  if owes == '1' then
    redis.call('SADD', KEYS[8], field)
  else
    redis.call('SREM', KEYS[8], field)
  end
end

redis.call('DEL', KEYS[3])
redis.call('ZREM', KEYS[5], hour)
redis.call('ZADD', KEYS[6], hour, hour)
local closed = tonumber(redis.call('GET', KEYS[9]) or '-1')
if tonumber(hour) > closed then
  redis.call('SET', KEYS[9], hour)
end
return { 1 }
