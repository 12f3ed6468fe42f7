-- finish: BullMQ 6.7.0 moveToFinished (completed or failed), without fetching the next
-- job (our worker claims separately).
-- ARGV: 1 prefix, 2 id, 3 ts ms, 4 lock token, 5 "completed" | "failed",
--       6 returnvalue (JSON text) or failedReason (raw text),
--       7 keep count (-1 keep all, 0 remove now, n keep newest n), 8 keep age in s ("" none),
--       9 keep limit (age removals per call), 10 opts.attempts, 11 stacktrace JSON ("" none).
-- Returns 0, or -1 (no job), -2 (no lock), -3 (not active), -4/-9 (flow children),
-- -6 (lock held by another worker).
--@include queue
local p, id, ts, token, target = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local jobKey = p .. id

-- (on a missing job SCARD and ZCARD are 0: take_active's -1 still comes first)
if target == "completed" then
  if redis.call("SCARD", jobKey .. ":dependencies") ~= 0 then
    return -4
  end
  if redis.call("ZCARD", jobKey .. ":unsuccessful") ~= 0 then
    return -9
  end
end
local taken = take_active(p, id, token, -1)
if taken ~= 0 then
  return taken
end
local deid = redis.call("HGET", jobKey, "deid")

local maxEvents = max_events(p)
redis.call("XTRIM", p .. "events", "MAXLEN", "~", maxEvents)

if deid then
  -- Release a deduplication key without a TTL that this job owns.
  local dk = p .. "de:" .. deid
  if redis.call("PTTL", dk) == -1 and redis.call("GET", dk) == id then
    redis.call("DEL", dk)
  end
end

local atm = redis.call("HINCRBY", jobKey, "atm", 1)
local field = "failedReason"
if target == "completed" then
  field = "returnvalue"
end

local count = tonumber(ARGV[7])
if count ~= 0 then
  local set = p .. target
  redis.call("ZADD", set, ts, id)
  redis.call("HSET", jobKey, field, ARGV[6], "finishedOn", ts)
  if target == "failed" then
    if ARGV[11] ~= "" then
      redis.call("HSET", jobKey, "stacktrace", ARGV[11])
    end
    redis.call("HDEL", jobKey, "defa")
  end
  local age = tonumber(ARGV[8])
  if age then
    local limit = tonumber(ARGV[9]) or 1000
    local old = redis.call("ZREVRANGEBYSCORE", set, tonumber(ts) - age * 1000, "-inf",
                           "LIMIT", 0, limit)
    for i = 1, #old do
      remove_job_keys(p, old[i])
    end
    if #old > 0 then
      redis.call("ZREM", set, unpack(old))
    end
  end
  if count > 0 then
    local extra = redis.call("ZREVRANGE", set, count, -1)
    for i = 1, #extra do
      remove_job_keys(p, extra[i])
    end
    if #extra > 0 then
      redis.call("ZREMRANGEBYRANK", set, 0, -(count + 1))
    end
  end
else
  remove_job_keys(p, id)
end

redis.call("XADD", p .. "events", "*", "event", target, "jobId", id, field, ARGV[6],
           "prev", "active")
if target == "failed" and atm >= (tonumber(ARGV[10]) or 0) then
  redis.call("XADD", p .. "events", "*", "event", "retries-exhausted", "jobId", id,
             "attemptsMade", atm)
end
if redis.call("LLEN", p .. "wait") == 0 and redis.call("LLEN", p .. "active") == 0 and
   redis.call("ZCARD", p .. "prioritized") == 0 then
  redis.call("XADD", p .. "events", "*", "event", "drained")
end
return 0
