-- Shared helpers of our BullMQ 6.7.0 scripts (see docs: bullmq-protocol.md).
-- Every script gets the key prefix P = "<prefix>:<queue>:" as ARGV[1] and builds
-- the key names from it. Timestamps arrive as decimal strings from the caller's
-- clock; they are stored as given and only turned into numbers for arithmetic.

-- Decimal text of a whole number up to 2^53 (Lua's tostring uses %.14g).
local function int_str(n)
  return string.format("%d", n)
end

-- True when claims must stop: the queue is paused, or at its global concurrency.
local function paused_or_maxed(p)
  local m = redis.call("HMGET", p .. "meta", "paused", "concurrency")
  if m[1] then
    return true
  end
  if m[2] and redis.call("LLEN", p .. "active") >= tonumber(m[2]) then
    return true
  end
  return false
end

-- The approximate cap of the events stream, written to meta when missing.
local function max_events(p)
  local n = redis.call("HGET", p .. "meta", "opts.maxLenEvents")
  if not n then
    redis.call("HSET", p .. "meta", "opts.maxLenEvents", 10000)
    return 10000
  end
  return tonumber(n)
end

-- Score in the prioritized ZSET: priority * 2^32 + a FIFO counter.
local function priority_score(p, priority)
  local pc = redis.call("INCR", p .. "pc")
  return priority * 4294967296 + (pc % 4294967296)
end

-- Score in the delayed ZSET: due * 4096 + a sequence among jobs due in the same ms.
local function delayed_score(p, due)
  local base = due * 4096
  local top = redis.call("ZREVRANGEBYSCORE", p .. "delayed", base + 4095, base,
                         "WITHSCORES", "LIMIT", 0, 1)
  if top[2] then
    local s = tonumber(top[2]) + 1
    if s > base + 4095 then
      s = base + 4095
    end
    return s
  end
  return base
end

-- Tell sleeping workers when the earliest delayed job is due (marker "1", score in ms).
local function add_delay_marker(p)
  local first = redis.call("ZRANGE", p .. "delayed", 0, 0, "WITHSCORES")
  if first[2] then
    redis.call("ZADD", p .. "marker", math.floor(tonumber(first[2]) / 4096), "1")
  end
end

-- Move delayed jobs that are due at @ts to wait (or prioritized), as BullMQ does.
local function promote_delayed(p, ts, wake)
  local ids = redis.call("ZRANGEBYSCORE", p .. "delayed", 0, (ts + 1) * 4096 - 1,
                         "LIMIT", 0, 1000)
  if #ids == 0 then
    return
  end
  redis.call("ZREM", p .. "delayed", unpack(ids))
  for i = 1, #ids do
    local id = ids[i]
    local prio = tonumber(redis.call("HGET", p .. id, "priority") or "0") or 0
    if prio == 0 then
      redis.call("LPUSH", p .. "wait", id)
    else
      redis.call("ZADD", p .. "prioritized", priority_score(p, prio), id)
    end
    redis.call("XADD", p .. "events", "*", "event", "waiting", "jobId", id, "prev", "delayed")
    redis.call("HSET", p .. id, "delay", 0)
  end
  if wake then
    redis.call("ZADD", p .. "marker", 0, "0")
  end
end

-- Delete a job and the keys that hang off it.
local function remove_job_keys(p, id)
  local k = p .. id
  redis.call("DEL", k, k .. ":logs", k .. ":dependencies", k .. ":processed", k .. ":failed",
             k .. ":unsuccessful", k .. ":lock")
end

-- Check that @token holds the job's lock and release it. Returns 0, -2 (no lock)
-- or -6 (another worker's lock). Token "0" means "no lock" and is never used by us.
local function release_lock(p, id, token)
  if token == "0" then
    return 0
  end
  local lk = p .. id .. ":lock"
  local cur = redis.call("GET", lk)
  if cur == token then
    redis.call("DEL", lk)
    redis.call("SREM", p .. "stalled", id)
    return 0
  end
  if cur then
    return -6
  end
  return -2
end

-- Take a job this worker holds out of active: check it exists, release our lock, LREM it
-- (@count as LREM's: -1 from the tail as moveToFinished does, 1 from the head). Returns
-- 0, -1 (no job), -2/-6 (lock, see release_lock) or -3 (not active).
local function take_active(p, id, token, count)
  if redis.call("EXISTS", p .. id) == 0 then
    return -1
  end
  local lockState = release_lock(p, id, token)
  if lockState ~= 0 then
    return lockState
  end
  if redis.call("LREM", p .. "active", count, id) == 0 then
    return -3
  end
  return 0
end

-- Set a marker so that a blocked worker wakes up, unless the queue is paused or maxed.
local function wake(p, blocked)
  if not blocked then
    redis.call("ZADD", p .. "marker", 0, "0")
  end
end
