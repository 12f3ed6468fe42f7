-- stalled: BullMQ 6.7.0 moveStalledJobsToWait, throttled queue-wide by "stalled-check".
-- Jobs that were active at the previous check and have no lock now go back to the
-- head of wait (stc + 1); beyond maxStalledCount they get "defa", and the next claimer
-- fails them without running them.
-- ARGV: 1 prefix, 2 ts ms, 3 maxStalledCount, 4 stalledInterval ms.
-- Returns the ids moved back to wait.
--@include queue
local p, ts = ARGV[1], ARGV[2]
local maxStalled = tonumber(ARGV[3])
if redis.call("EXISTS", p .. "stalled-check") == 1 then
  return {}
end
redis.call("SET", p .. "stalled-check", ts, "PX", ARGV[4])
redis.call("XTRIM", p .. "events", "MAXLEN", "~", max_events(p))

local blocked = paused_or_maxed(p)
local moved = {}
local stalled = redis.call("SMEMBERS", p .. "stalled")
if #stalled > 0 then
  redis.call("DEL", p .. "stalled")
  for i = 1, #stalled do
    local id = stalled[i]
    local jobKey = p .. id
    if redis.call("EXISTS", jobKey .. ":lock") == 0 and
       redis.call("LREM", p .. "active", 1, id) > 0 then
      local stc = redis.call("HINCRBY", jobKey, "stc", 1)
      local rjk = redis.call("HGET", jobKey, "rjk")
      local scheduled = rjk and (redis.call("EXISTS", p .. "repeat:" .. rjk) == 1 or
                                 redis.call("ZSCORE", p .. "repeat", rjk))
      if not scheduled and stc > maxStalled then
        redis.call("HSET", jobKey, "defa", "job stalled more than allowable limit")
      end
      redis.call("RPUSH", p .. "wait", id)
      if not blocked then
        redis.call("ZADD", p .. "marker", 0, "0")
      end
      redis.call("XADD", p .. "events", "*", "event", "waiting", "jobId", id, "prev", "active")
      redis.call("XADD", p .. "events", "*", "event", "stalled", "jobId", id)
      moved[#moved + 1] = id
    end
  end
end

local active = redis.call("LRANGE", p .. "active", 0, -1)
for i = 1, #active, 7000 do
  redis.call("SADD", p .. "stalled", unpack(active, i, math.min(i + 6999, #active)))
end
return moved
