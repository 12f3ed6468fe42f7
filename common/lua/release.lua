-- release: give an active job back without counting an attempt (BullMQ 6.7.0
-- moveJobFromActiveToWait semantics): to the front of wait, or the front of its priority.
-- Used when the worker cannot run jobs right now (bad Graph token, rate limit, shutdown).
-- ARGV: 1 prefix, 2 id, 3 lock token. Returns 0, -1 (no job), -2/-6 (lock), -3 (not active).
--@include queue
local p, id, token = ARGV[1], ARGV[2], ARGV[3]
local jobKey = p .. id
local taken = take_active(p, id, token, 1)
if taken ~= 0 then
  return taken
end
local prio = tonumber(redis.call("HGET", jobKey, "priority") or "0") or 0
if prio == 0 then
  redis.call("RPUSH", p .. "wait", id)
else
  redis.call("ZADD", p .. "prioritized", prio * 4294967296, id)
end
wake(p, paused_or_maxed(p))
redis.call("XADD", p .. "events", "MAXLEN", "~", max_events(p), "*",
           "event", "waiting", "jobId", id, "prev", "active")
return 0
