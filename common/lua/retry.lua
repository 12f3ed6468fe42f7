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
local blocked = paused_or_maxed(p)

if delay <= 0 then
  promote_delayed(p, tsn, not blocked)
end
if redis.call("EXISTS", jobKey) == 0 then
  return -1
end
local lockState = release_lock(p, id, token)
if lockState ~= 0 then
  return lockState
end
redis.call("HSET", jobKey, "failedReason", ARGV[6])
if ARGV[7] ~= "" then
  redis.call("HSET", jobKey, "stacktrace", ARGV[7])
end
if redis.call("LREM", p .. "active", -1, id) == 0 then
  return -3
end
local maxEvents = max_events(p)

if delay > 0 then
  local due = tsn + delay
  redis.call("HINCRBY", jobKey, "atm", 1)
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
    if not blocked then
      redis.call("ZADD", p .. "marker", 0, "0")
    end
  else
    redis.call("ZADD", p .. "prioritized", priority_score(p, prio), id)
    if not blocked then
      redis.call("ZADD", p .. "marker", 0, "0")
    end
  end
  redis.call("HINCRBY", jobKey, "atm", 1)
  redis.call("XADD", p .. "events", "MAXLEN", "~", maxEvents, "*",
             "event", "waiting", "jobId", id, "prev", "active")
end
return 0
