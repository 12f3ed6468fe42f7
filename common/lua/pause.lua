-- pause: BullMQ 6.7.0 pause/resume of the whole queue (v6: jobs stay in wait).
-- ARGV: 1 prefix, 2 "pause" | "resume". Returns 1 if the state changed, 0 if not.
--@include queue
local p = ARGV[1]
local isPaused = redis.call("HEXISTS", p .. "meta", "paused") == 1
if ARGV[2] == "pause" then
  if isPaused then
    return 0
  end
  redis.call("HSET", p .. "meta", "paused", 1)
  redis.call("DEL", p .. "marker")
  redis.call("XADD", p .. "events", "*", "event", "paused")
  return 1
end
if not isPaused then
  return 0
end
redis.call("HDEL", p .. "meta", "paused")
-- A legacy (v5) paused list is moved into wait.
if redis.call("EXISTS", p .. "paused") == 1 then
  if redis.call("EXISTS", p .. "wait") == 0 then
    redis.call("RENAME", p .. "paused", p .. "wait")
  else
    local ids = redis.call("LRANGE", p .. "paused", -7000, -1)
    for i = #ids, 1, -1 do
      redis.call("LPUSH", p .. "wait", ids[i])
    end
    redis.call("LTRIM", p .. "paused", 0, -7001)
  end
end
if redis.call("LLEN", p .. "wait") > 0 or redis.call("ZCARD", p .. "prioritized") > 0 then
  redis.call("ZADD", p .. "marker", 0, "0")
end
add_delay_marker(p)
redis.call("XADD", p .. "events", "*", "event", "resumed")
return 1
