-- add: one job, standard, prioritized or delayed (BullMQ 6.7.0 addStandardJob,
-- addPrioritizedJob, addDelayedJob semantics; no flows, no deduplication).
-- ARGV: 1 prefix, 2 custom job id ("" = from the counter), 3 name, 4 timestamp ms,
--       5 data (JSON text), 6 opts (JSON text), 7 delay ms, 8 priority, 9 lifo "1"/"0".
-- Returns {id, 1} when added, {id, 0} when a job with that custom id already exists.
--@include queue
local p = ARGV[1]
local counter = redis.call("INCR", p .. "id")
local id = ARGV[2]
if id == "" then
  id = int_str(counter)
end
local maxEvents = max_events(p)
local jobKey = p .. id

if ARGV[2] ~= "" and redis.call("EXISTS", jobKey) == 1 then
  redis.call("XADD", p .. "events", "MAXLEN", "~", maxEvents, "*",
             "event", "duplicated", "jobId", id)
  return {id, 0}
end

local delay = tonumber(ARGV[7]) or 0
local priority = tonumber(ARGV[8]) or 0
redis.call("HMSET", jobKey, "name", ARGV[3], "data", ARGV[5], "opts", ARGV[6],
           "timestamp", ARGV[4], "delay", ARGV[7], "priority", ARGV[8])
redis.call("XADD", p .. "events", "*", "event", "added", "jobId", id, "name", ARGV[3])

if delay > 0 then
  local due = tonumber(ARGV[4]) + delay
  redis.call("ZADD", p .. "delayed", delayed_score(p, due), id)
  redis.call("XADD", p .. "events", "MAXLEN", "~", maxEvents, "*",
             "event", "delayed", "jobId", id, "delay", int_str(due))
  add_delay_marker(p)
else
  local wake = not paused_or_maxed(p)
  if priority > 0 then
    redis.call("ZADD", p .. "prioritized", priority_score(p, priority), id)
  elseif ARGV[9] == "1" then
    redis.call("RPUSH", p .. "wait", id)
  else
    redis.call("LPUSH", p .. "wait", id)
  end
  if wake then
    redis.call("ZADD", p .. "marker", 0, "0")
  end
  redis.call("XADD", p .. "events", "MAXLEN", "~", maxEvents, "*",
             "event", "waiting", "jobId", id)
end
return {id, 1}
