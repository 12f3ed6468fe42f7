-- retry_failed: move one batch of failed jobs back to wait, with the data-model effects of
-- BullMQ 6.7.0 Queue.retryJobs({state: "failed"}) and job.retry("failed") (see
-- bullmq-protocol.md): the job loses finishedOn, processedOn and failedReason, leaves the
-- failed ZSET, is queued again and a "waiting ... prev failed" event is written.
--
-- Where the two Node paths differ we take job.retry()'s per-job behaviour, because this
-- queue carries prioritized (backfill) jobs: a job with a priority goes back to the
-- prioritized ZSET with a fresh FIFO score, a lifo job to the front of wait, the others
-- to the back of wait. Node keeps atm and ats (attemptsMade/attemptsStarted) unless
-- job.retry() is given resetAttemptsMade/resetAttemptsStarted; ARGV[4] = "1" does that.
-- The stacktrace is kept, as Node keeps it.
--
-- No marker is added while the queue is paused (or at its global concurrency): the jobs
-- wait in "wait" and resume adds the marker. An id in the failed ZSET whose job hash is
-- gone is only removed from the ZSET (Node would queue a job that does not exist).
-- Flow children are put back into their parent's dependencies, as Node does.
--
-- ARGV: 1 prefix, 2 ts ms (only jobs that finished at or before it are taken, so jobs
--       that fail again during a run are not retried twice), 3 batch size, 4 reset "1"/"0".
-- Returns {taken, moved}: ids taken from the failed ZSET, of which moved to wait.
--@include queue
local p, ts = ARGV[1], ARGV[2]
-- ZREM takes the ids as arguments: keep a batch well inside Lua's stack limit.
local count = math.min(tonumber(ARGV[3]) or 1000, 5000)
local reset = ARGV[4] == "1"

local ids = redis.call("ZRANGEBYSCORE", p .. "failed", 0, ts, "LIMIT", 0, count)
if #ids == 0 then
  return {0, 0}
end
local blocked = paused_or_maxed(p)
local maxEvents = max_events(p)
local moved = 0
for i = 1, #ids do
  local id = ids[i]
  local jobKey = p .. id
  if redis.call("EXISTS", jobKey) == 1 then
    redis.call("HDEL", jobKey, "finishedOn", "processedOn", "failedReason")
    if reset then
      redis.call("HDEL", jobKey, "atm", "ats")
    end
    local f = redis.call("HMGET", jobKey, "priority", "opts", "parentKey")
    local prio = tonumber(f[1] or "0") or 0
    if prio > 0 then
      redis.call("ZADD", p .. "prioritized", priority_score(p, prio), id)
    else
      local ok, opts = pcall(cjson.decode, f[2] or "{}")
      if ok and type(opts) == "table" and opts.lifo == true then
        redis.call("RPUSH", p .. "wait", id)
      else
        redis.call("LPUSH", p .. "wait", id)
      end
    end
    local parentKey = f[3]
    if parentKey and redis.call("EXISTS", parentKey) == 1 then
      if redis.call("ZREM", parentKey .. ":unsuccessful", jobKey) == 1 or
         redis.call("HDEL", parentKey .. ":failed", jobKey) == 1 then
        redis.call("SADD", parentKey .. ":dependencies", jobKey)
      end
    end
    redis.call("XADD", p .. "events", "MAXLEN", "~", maxEvents, "*",
               "event", "waiting", "jobId", id, "prev", "failed")
    moved = moved + 1
  end
end
redis.call("ZREM", p .. "failed", unpack(ids))
if moved > 0 and not blocked then
  redis.call("ZADD", p .. "marker", 0, "0")
end
return {#ids, moved}
