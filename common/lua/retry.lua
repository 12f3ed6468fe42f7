-- retry: a failed attempt that will be tried again. With a delay it is BullMQ 6.7.0
-- moveToDelayed (backoff: to the delayed ZSET, "delayed" event); without, retryJob
-- (back to wait or prioritized, "waiting ... prev active" event). Never a "failed" event.
-- ARGV: 1 prefix, 2 id, 3 ts ms, 4 lock token, 5 delay ms ("0" = now), 6 failedReason,
--       7 stacktrace JSON ("" none), 8 lifo "1"/"0".
-- Returns 0, -1 (no job), -2 (no lock), -3 (not active), -6 (another worker's lock).
--@include queue
local p, id, ts, token = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local tsn = tonumber(ts)
local delay = tonumber(ARGV[5]) or 0
local jobKey = p .. id
local blocked = false

if delay <= 0 then
  blocked = paused_or_maxed(p)
  promote_delayed(p, tsn, not blocked)
end
local taken = take_active(p, id, token, -1)
if taken ~= 0 then
  return taken
end
redis.call("HSET", jobKey, "failedReason", ARGV[6])
if ARGV[7] ~= "" then
  redis.call("HSET", jobKey, "stacktrace", ARGV[7])
end
redis.call("HINCRBY", jobKey, "atm", 1)
local maxEvents = max_events(p)

if delay > 0 then
  local due = tsn + delay
  redis.call("HSET", jobKey, "delay", ARGV[5])
  redis.call("ZADD", p .. "delayed", delayed_score(p, due), id)
  redis.call("XADD", p .. "events", "MAXLEN", "~", maxEvents, "*",
             "event", "delayed", "jobId", id, "delay", int_str(due))
  add_delay_marker(p)
else
  local prio = tonumber(redis.call("HGET", jobKey, "priority") or "0") or 0
  if prio == 0 then
    if ARGV[8] == "1" then
      redis.call("RPUSH", p .. "wait", id)
    else
      redis.call("LPUSH", p .. "wait", id)
    end
  else
    redis.call("ZADD", p .. "prioritized", priority_score(p, prio), id)
  end
  wake(p, blocked)
  redis.call("XADD", p .. "events", "MAXLEN", "~", maxEvents, "*",
             "event", "waiting", "jobId", id, "prev", "active")
end
return 0
