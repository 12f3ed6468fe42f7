-- claim: BullMQ 6.7.0 moveToActive. Promotes due delayed jobs, honours the global rate
-- limit, pause and global concurrency, takes from wait before prioritized, locks the
-- job, records processedOn/pb/ats and emits "active".
-- ARGV: 1 prefix, 2 ts ms, 3 lock token, 4 lock duration ms, 5 worker name ("" = none).
-- Returns {job hash as a flat array | 0, id | 0, rate-limit ttl ms, next delayed due ms}.
--@include queue
local p, ts, token = ARGV[1], ARGV[2], ARGV[3]
local tsn = tonumber(ts)
local meta = redis.call("HMGET", p .. "meta", "paused", "concurrency", "max", "duration")
local blocked = meta[1] ~= false or
  (meta[2] ~= false and redis.call("LLEN", p .. "active") >= tonumber(meta[2]))

promote_delayed(p, tsn, not blocked)

local maxJobs = tonumber(meta[3])
if maxJobs then
  local used = tonumber(redis.call("GET", p .. "limiter") or "0")
  if used >= maxJobs then
    local ttl = redis.call("PTTL", p .. "limiter")
    if ttl == 0 then
      redis.call("DEL", p .. "limiter")
    elseif ttl > 0 then
      return {0, 0, ttl, 0}
    end
  end
end

if blocked then
  return {0, 0, 0, 0}
end

for _ = 1, 100 do
  local id = redis.call("RPOPLPUSH", p .. "wait", p .. "active")
  if id and string.sub(id, 1, 2) == "0:" then
    -- A legacy marker id, not a job.
    redis.call("LREM", p .. "active", 1, id)
  else
    if not id then
      local z = redis.call("ZPOPMIN", p .. "prioritized")
      if z[1] then
        id = z[1]
        redis.call("LPUSH", p .. "active", id)
      else
        redis.call("DEL", p .. "pc")
      end
    end
    if not id then
      break
    end
    local jobKey = p .. id
    if redis.call("EXISTS", jobKey) == 0 then
      -- An id whose job was removed: drop it and look again.
      redis.call("LREM", p .. "active", -1, id)
    else
      if maxJobs and redis.call("HEXISTS", jobKey, "defa") == 0 then
        if redis.call("INCR", p .. "limiter") == 1 then
          local dur = math.floor(math.abs(tonumber(meta[4]) or 0))
          if dur > 0 then
            redis.call("PEXPIRE", p .. "limiter", dur)
          end
        end
      end
      redis.call("SET", jobKey .. ":lock", token, "PX", ARGV[4])
      redis.call("XADD", p .. "events", "*", "event", "active", "jobId", id, "prev", "waiting")
      if ARGV[5] ~= "" then
        redis.call("HMSET", jobKey, "processedOn", ts, "pb", ARGV[5])
      else
        redis.call("HSET", jobKey, "processedOn", ts)
      end
      redis.call("HINCRBY", jobKey, "ats", 1)
      redis.call("ZADD", p .. "marker", 0, "0")
      return {redis.call("HGETALL", jobKey), id, 0, 0}
    end
  end
end

local first = redis.call("ZRANGE", p .. "delayed", 0, 0, "WITHSCORES")
if first[2] then
  return {0, 0, 0, math.floor(tonumber(first[2]) / 4096)}
end
return {0, 0, 0, 0}
