"""The Lua scripts of the key's turn and its nonces, each run atomically inside Redis."""

__all__ = ["DRAW_LUA", "PASS_LUA"]

# draw(key, unit, count): reserve `count` nonces, return the first as a decimal string.
# Redis TIME gives seconds and microseconds as strings; the nonce is built and compared as a
# decimal string and moved with INCRBY, so it stays exact above 2**53, where Lua's doubles
# would round: max(last + 1, now), then the rest of the block.
DRAW_LUA = """
local function draw(key, unit, count)
  local t = redis.call('TIME')
  local now
  if unit == 'ns' then
    now = t[1] .. string.format('%06d', tonumber(t[2])) .. '000'
  elseif unit == 'us' then
    now = t[1] .. string.format('%06d', tonumber(t[2]))
  else
    now = t[1] .. string.format('%03d', math.floor(tonumber(t[2]) / 1000))
  end
  redis.call('INCRBY', key, 1)
  local first = redis.call('GET', key)
  if string.len(now) > string.len(first)
     or (string.len(now) == string.len(first) and now > first) then
    redis.call('SET', key, now)
    first = now
  end
  if count > 1 then
    redis.call('INCRBY', key, count - 1)
  end
  return first
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""

# One script does all three moves, each in one round trip: take (no old token), release (no
# new token), and pass (both: a holder whose lease ended and who wants the turn again).
# KEYS: turn, nonce, queue, waiters, the new token's wake list.
# ARGV: old token, new token, ttl_ms, unit, count, stay_ms, ask-channel prefix, wake prefix.
# Release: if the old token holds the turn, hand it to the oldest waiter whose deadline has not
# passed (turn, ttl and nonces set here, "first count waiting" pushed on its wake list), else
# free it. Take: free (or already ours) -> {1, first, waiting}; held -> queue once (the hash
# keeps each waiter's deadline, ttl and block size), and if first in line ask the holder's
# process (the token starts with its id) -> {0, '0', 0}. Wake lists are named from tokens:
# fine on one Redis, not on a cluster.
PASS_LUA = (
    DRAW_LUA
    + """
local old, new = ARGV[1], ARGV[2]
if old ~= '' then
  redis.call('HDEL', KEYS[4], old)
  if redis.call('GET', KEYS[1]) == old then
    local now = now_ms()
    local handed = false
    while not handed do
      local waiter = redis.call('LPOP', KEYS[3])
      if not waiter then
        redis.call('DEL', KEYS[1])
        break
      end
      local meta = redis.call('HGET', KEYS[4], waiter)
      if meta then
        redis.call('HDEL', KEYS[4], waiter)
        local deadline, ttl, count = string.match(meta, '(%d+) (%d+) (%d+)')
        if tonumber(deadline) > now then
          redis.call('SET', KEYS[1], waiter, 'PX', ttl)
          local first = draw(KEYS[2], ARGV[4], tonumber(count))
          local wake = ARGV[8] .. waiter
          local waiting = redis.call('LLEN', KEYS[3])
          redis.call('RPUSH', wake, first .. ' ' .. count .. ' ' .. waiting)
          redis.call('PEXPIRE', wake, tonumber(ttl))
          handed = true
        end
      end
    end
  end
end
if new == '' then
  return {0, '0', 0}
end
local holder = redis.call('GET', KEYS[1])
if (not holder) or holder == new then
  redis.call('SET', KEYS[1], new, 'PX', ARGV[3])
  redis.call('HDEL', KEYS[4], new)
  redis.call('DEL', KEYS[5])
  return {1, draw(KEYS[2], ARGV[4], tonumber(ARGV[5])), redis.call('LLEN', KEYS[3])}
end
local deadline = now_ms() + tonumber(ARGV[6])
local meta = string.format('%.0f', deadline) .. ' ' .. ARGV[3] .. ' ' .. ARGV[5]
if redis.call('HSET', KEYS[4], new, meta) == 1 then
  if redis.call('RPUSH', KEYS[3], new) == 1 then
    redis.call('PUBLISH', ARGV[7] .. string.match(holder, '^[^.]*'), holder)
  end
end
local keep = tonumber(ARGV[3]) + tonumber(ARGV[6])
redis.call('PEXPIRE', KEYS[3], keep)
redis.call('PEXPIRE', KEYS[4], keep)
return {0, '0', 0}
"""
)
