-- clean: remove one batch of finished jobs that finished at or before a cut-off, with the
-- data-model effects of BullMQ 6.7.0 Queue.clean(grace, limit, "completed" | "failed")
-- (see bullmq-protocol.md): the oldest first (the ZSET score is finishedOn), each with
-- every key that hangs off it (hash, :logs, flow keys, a stale :lock), a deduplication
-- key it still owns (and the pending "dn:" payload of that id), and one "cleaned" event
-- per call carrying the count, written even when it is 0, as Node writes it.
--
-- Flow parents are left alone: a finished child is no longer in its parent's
-- dependencies (the finish moved it), and this queue does not run flows.
--
-- ARGV: 1 prefix, 2 "completed" | "failed", 3 cut-off ts ms, 4 batch size.
-- Returns the number of jobs removed.
--@include queue
local p, state, cutoff = ARGV[1], ARGV[2], ARGV[3]
if state ~= "completed" and state ~= "failed" then
  return redis.error_reply("clean: state must be completed or failed")
end
-- ZREM takes the ids as arguments: keep a batch well inside Lua's stack limit.
local count = math.min(tonumber(ARGV[4]) or 1000, 5000)
local set = p .. state

local ids = redis.call("ZRANGEBYSCORE", set, 0, cutoff, "LIMIT", 0, count)
for i = 1, #ids do
  local id = ids[i]
  local deid = redis.call("HGET", p .. id, "deid")
  if deid and redis.call("GET", p .. "de:" .. deid) == id then
    redis.call("DEL", p .. "de:" .. deid, p .. "dn:" .. deid)
  end
  remove_job_keys(p, id)
end
if #ids > 0 then
  redis.call("ZREM", set, unpack(ids))
end
redis.call("XADD", p .. "events", "*", "event", "cleaned", "count", #ids)
return #ids
