--[[
  A fixed-window request counter shared by every registration replica: the buyer-facing limits (per client
  address, and overall) are a count per minute, not a quota to pace, so a window is enough and its key
  expires with the window (an attacker's many addresses leave nothing behind for long).

  KEYS[1] counter (string)
  ARGV[1] window (ms)   ARGV[2] requests allowed per window

  Returns 0 when the request is allowed, else the milliseconds until the window ends.
]]
local n = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
-- A new window (or a counter that lost its expiry): it ends one window from now.
if n == 1 or ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
if n <= tonumber(ARGV[2]) then return 0 end
return math.max(ttl, 1)
