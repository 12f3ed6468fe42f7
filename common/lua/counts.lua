-- counts: the 7 numbers of BullMQ 6.7.0 Queue.getJobCounts(), as one atomic snapshot,
-- plus whether the queue is paused.
-- KEYS: none. ARGV[1] = key prefix "<prefix>:<queue>:".
-- Returns {active, completed, delayed, failed, prioritized, waiting, waiting-children, paused}.
local p = ARGV[1]
local waiting = redis.call("LLEN", p .. "wait")
-- A legacy "0:..." marker at the tail of wait is not a job (v4 markers).
if waiting > 0 then
  local tail = redis.call("LINDEX", p .. "wait", -1)
  if tail and string.sub(tail, 1, 2) == "0:" then
    waiting = waiting - 1
  end
end
return {
  redis.call("LLEN", p .. "active"),
  redis.call("ZCARD", p .. "completed"),
  redis.call("ZCARD", p .. "delayed"),
  redis.call("ZCARD", p .. "failed"),
  redis.call("ZCARD", p .. "prioritized"),
  waiting,
  redis.call("ZCARD", p .. "waiting-children"),
  redis.call("HEXISTS", p .. "meta", "paused"),
}
