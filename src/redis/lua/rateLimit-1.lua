--[[
  A token bucket shared by every worker pod: AWS's quota is per account and Region, not per process.
  Time comes from the Redis server, so pods with drifting clocks still share one bucket. The rate adapts:
  a throttling answer cuts it by 30 % (down to a floor), and it climbs back additively (AIMD, with
  the AWS SDK's adaptive-retry factor).

  KEYS[1] bucket (hash: tokens, at, rate)
  ARGV[1] 'take' | 'throttled'   ARGV[2] configured rate (req/s)   ARGV[3] burst (tokens)
  ARGV[4] lowest rate (req/s)    ARGV[5] recovery (req/s gained per second)

  Returns for 'take': 0 when a token was taken, else the milliseconds to wait before asking again;
  for 'throttled': the new rate in milli-requests per second.
]]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local maxRate, burst = tonumber(ARGV[2]), tonumber(ARGV[3])
local minRate, recovery = tonumber(ARGV[4]), tonumber(ARGV[5])

local state = redis.call('HMGET', KEYS[1], 'tokens', 'at', 'rate')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
local rate = tonumber(state[3]) or maxRate
local elapsed = math.max(0, now - at) / 1000

rate = math.min(maxRate, rate + recovery * elapsed)
tokens = math.min(burst, tokens + rate * elapsed)

local result
if ARGV[1] == 'throttled' then
  rate = math.max(minRate, rate * 0.7)
  -- AWS said the quota is spent: do not spend what the bucket still holds either.
  tokens = math.min(tokens, 0)
  result = math.floor(rate * 1000)
elseif tokens >= 1 then
  tokens = tokens - 1
  result = 0
else
  result = math.ceil((1 - tokens) / rate * 1000)
end

redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now), 'rate', tostring(rate))
redis.call('PEXPIRE', KEYS[1], 3600000)
return result
