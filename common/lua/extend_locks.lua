-- extend_locks: renew the locks this worker holds (BullMQ 6.7.0 extendLocks).
-- ARGV: 1 prefix, 2 lock duration ms, then pairs of job id and lock token.
-- Returns the ids whose lock is no longer ours (those jobs will be re-run elsewhere).
--@include queue
local p = ARGV[1]
local lost = {}
for i = 3, #ARGV, 2 do
  local id, token = ARGV[i], ARGV[i + 1]
  local lk = p .. id .. ":lock"
  if redis.call("GET", lk) == token then
    redis.call("SET", lk, token, "PX", ARGV[2])
    redis.call("SREM", p .. "stalled", id)
  else
    lost[#lost + 1] = id
  end
end
return lost
