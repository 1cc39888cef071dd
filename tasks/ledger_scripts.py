"""The ledger's Lua scripts: each change to an entry is one of them, atomic, on Redis's clock.

Keys and arguments are documented above each script; times are unix seconds as decimal
strings (Lua prints floats with 14 digits, which would round them), entries are JSON.
"""

PRELUDE = """
local function now()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local function at(seconds) return string.format('%.6f', seconds) end
local function new_entry(t)
  return {asked_at = t, state = 'queued', attempts = 0, ambiguous = false, sends = 0}
end
"""

# KEYS: open, due, closed. ARGV: state ('queued'|'scheduled'), task id or '', 'in'|'at',
# seconds, then the ids. Records each id (again, after an earlier close); a scheduled id
# whose entry is already queued or running keeps its state and deadline.
ASK = (
    PRELUDE
    + """
local t = now()
local when = tonumber(ARGV[4])
if ARGV[3] == 'in' then when = t + when end
for i = 5, #ARGV do
  local id = ARGV[i]
  local raw = redis.call('HGET', KEYS[1], id)
  local e = raw and cjson.decode(raw) or new_entry(t)
  local keep = raw and ARGV[1] == 'scheduled' and e.state ~= 'scheduled'
  if not keep then
    e.state = ARGV[1]
    if ARGV[2] ~= '' then e.task_id = ARGV[2] end
    redis.call('HSET', KEYS[1], id, cjson.encode(e))
    redis.call('ZADD', KEYS[2], at(when), id)
  end
  redis.call('HDEL', KEYS[3], id)
end
return at(when)
"""
)

# KEYS: open, due, closed. ARGV: task id or '', hold seconds, then the ids. A worker starts
# on them: each open (or unknown, or failed) id becomes 'running' with its deadline ``hold``
# ahead; returns, per id, 'open' and its entry, or 'closed' and Kraken's final answer.
BEGIN = (
    PRELUDE
    + """
local t = now()
local out = {}
for i = 3, #ARGV do
  local id = ARGV[i]
  local raw = redis.call('HGET', KEYS[1], id)
  local closed = redis.call('HGET', KEYS[3], id)
  if closed and cjson.decode(closed).outcome == 'failed' then closed = false end
  if (not raw) and closed then
    out[#out + 1] = 'closed'
    out[#out + 1] = closed
  else
    local e = raw and cjson.decode(raw) or new_entry(t)
    e.state = 'running'
    e.attempts = e.attempts + 1
    if ARGV[1] ~= '' then e.task_id = ARGV[1] end
    if not e.first_at then e.first_at = t end
    local encoded = cjson.encode(e)
    redis.call('HSET', KEYS[1], id, encoded)
    redis.call('ZADD', KEYS[2], at(t + tonumber(ARGV[2])), id)
    out[#out + 1] = 'open'
    out[#out + 1] = encoded
  end
end
return out
"""
)

# KEYS: open, due. ARGV: hold seconds, state, ambiguous ('1', '0' or '' to keep), last
# error or '', then the ids. Moves the deadline of open ids; closed ones are left alone.
HOLD = (
    PRELUDE
    + """
local t = now()
for i = 5, #ARGV do
  local id = ARGV[i]
  local raw = redis.call('HGET', KEYS[1], id)
  if raw then
    local e = cjson.decode(raw)
    e.state = ARGV[2]
    if ARGV[3] == '1' then e.ambiguous = true elseif ARGV[3] == '0' then e.ambiguous = false end
    if ARGV[4] ~= '' then e.last_error = ARGV[4] end
    redis.call('HSET', KEYS[1], id, cjson.encode(e))
    redis.call('ZADD', KEYS[2], at(t + tonumber(ARGV[1])), id)
  end
end
return 1
"""
)

# KEYS: open, due, closed, closed_at. ARGV: pairs of id and final record (JSON). The
# record keeps the entry's attempts and asked_at.
CLOSE = (
    PRELUDE
    + """
local t = now()
for i = 1, #ARGV, 2 do
  local id = ARGV[i]
  local record = cjson.decode(ARGV[i + 1])
  local raw = redis.call('HGET', KEYS[1], id)
  if raw then
    local e = cjson.decode(raw)
    record.asked_at = e.asked_at
    record.attempts = math.max(record.attempts or 0, e.attempts)
  end
  local prior = redis.call('HGET', KEYS[3], id)
  if prior then  -- Kraken's notification came first: what it said stays
    local p = cjson.decode(prior)
    for _, k in ipairs({'paid_meanwhile', 'confirmed_by_kraken', 'kraken_status'}) do
      if p[k] ~= nil then record[k] = p[k] end
    end
  end
  record.closed_at = t
  redis.call('HDEL', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
  redis.call('HSET', KEYS[3], id, cjson.encode(record))
  redis.call('ZADD', KEYS[4], at(t), id)
end
return #ARGV / 2
"""
)

# KEYS: open, due. ARGV: limit, grace seconds, max doublings. Claims up to ``limit`` ids
# whose deadline passed: each gets a lease of grace * 2**sends (so an entry that waits in a
# long queue is not re-sent every grace), and its entry is returned.
CLAIM = (
    PRELUDE
    + """
local t = now()
local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', at(t), 'LIMIT', 0, tonumber(ARGV[1]))
local out = {}
for _, id in ipairs(ids) do
  local raw = redis.call('HGET', KEYS[1], id)
  if raw then
    local e = cjson.decode(raw)
    local lease = tonumber(ARGV[2]) * 2 ^ math.min(e.sends, tonumber(ARGV[3]))
    if e.state ~= 'scheduled' then e.sends = e.sends + 1 end
    e.state = 'queued'
    local encoded = cjson.encode(e)
    redis.call('HSET', KEYS[1], id, encoded)
    redis.call('ZADD', KEYS[2], at(t + lease), id)
    out[#out + 1] = id
    out[#out + 1] = encoded
  else
    redis.call('ZREM', KEYS[2], id)
  end
end
return out
"""
)

# KEYS: open, due, closed, closed_at. ARGV: id, Kraken's status from its notification.
# Returns what it meant for our cancellation: 'confirmed' (cancelled or expired: the entry
# closes, or its closed record says Kraken confirmed it), 'paid_meanwhile' (success for a
# request we were cancelling, or could not: it was paid), 'conflict' (paid after we had it
# cancelled), or 'unknown' (a request we never asked to cancel).
CONFIRM = (
    PRELUDE
    + """
local t = now()
local id, status = ARGV[1], ARGV[2]
local raw = redis.call('HGET', KEYS[1], id)
local closed = redis.call('HGET', KEYS[3], id)
local record
local answer = 'unknown'
if raw then
  local e = cjson.decode(raw)
  record = {asked_at = e.asked_at, attempts = e.attempts, closed_at = t}
  if status == 'success' then
    record.outcome = 'not_cancellable'
    record.paid_meanwhile = true
    answer = 'paid_meanwhile'
  else
    record.outcome = (status == 'expired') and 'expired' or 'cancelled'
    answer = 'confirmed'
  end
elseif closed then
  record = cjson.decode(closed)
  if status == 'success' then
    if record.outcome == 'cancelled' then answer = 'conflict' else
      record.paid_meanwhile = true
      answer = 'paid_meanwhile'
    end
  else
    answer = 'confirmed'
  end
else
  return answer
end
record.kraken_status = status
if answer == 'confirmed' then record.confirmed_by_kraken = true end
redis.call('HDEL', KEYS[1], id)
redis.call('ZREM', KEYS[2], id)
redis.call('HSET', KEYS[3], id, cjson.encode(record))
if not closed then redis.call('ZADD', KEYS[4], at(t), id) end
return answer
"""
)

# KEYS: open, due. ARGV: id. Forgets a cancellation that is still only scheduled.
UNSCHEDULE = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw or cjson.decode(raw).state ~= 'scheduled' then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
"""
