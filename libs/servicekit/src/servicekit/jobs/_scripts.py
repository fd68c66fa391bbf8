"""Lua scripts that move pending entries between consumers atomically.

Each touches one stream and its consumer group's companion keys (``<stream key>:retry:<group>``,
``<stream key>:attempts:<group>``, see :mod:`servicekit.keys`), which share the stream's hash tag,
so the scripts run unchanged on Redis Cluster. Every claimed
entry is returned as ``{id, fields, attempts-json or false, deliveries}``.
"""

from __future__ import annotations

# The clock rule: due times are Redis server time. Scripts read it with TIME and callers pass
# relative delays, so hosts whose clocks disagree still retry on schedule.
_SERVER_MS = """
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS: stream, retry zset, attempts hash. ARGV: group, consumer, count.
# Claims retries that are due. ZREM decides the winner when replicas race for the same entry.
CLAIM_DUE = (
    _SERVER_MS
    + """
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now_ms, 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, id in ipairs(due) do
  if redis.call('ZREM', KEYS[2], id) == 1 then
    local claimed = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, id)
    if claimed[1] then
      local p = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1)
      local deliveries = 1
      if p[1] then deliveries = p[1][4] end
      table.insert(out, {id, claimed[1][2], redis.call('HGET', KEYS[3], id), deliveries})
    else
      redis.call('HDEL', KEYS[3], id)
    end
  end
end
return out
"""
)

# KEYS: stream, retry zset, attempts hash.
# ARGV: group, consumer, min_idle_ms, scan_count, max_claims.
# Claims entries idle longer than the visibility timeout (their consumer died or hangs), except
# those waiting for a retry. It scans more pending entries than it claims, so entries parked in
# the retry set cannot hide a dead consumer's. XCLAIM's min-idle check makes racing reclaimers safe.
RECLAIM_IDLE = """
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], 'IDLE', tonumber(ARGV[3]), '-', '+',
                           tonumber(ARGV[4]))
local out = {}
local budget = tonumber(ARGV[5])
for _, p in ipairs(pending) do
  if budget <= 0 then break end
  local id = p[1]
  if not redis.call('ZSCORE', KEYS[2], id) then
    local claimed = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3]), id)
    if claimed[1] then
      table.insert(out, {id, claimed[1][2], redis.call('HGET', KEYS[3], id), p[4] + 1})
      budget = budget - 1
    end
  end
end
return out
"""

# KEYS: stream, retry zset, attempts hash. ARGV: group, consumer, ids...
# A restarted consumer takes back the entries its previous incarnation held (same consumer name),
# each id once: only ids still pending on this consumer and not waiting for a retry. The XCLAIM
# resets the idle time and counts the redelivery once (the delivery cap must see a consumer that
# keeps crashing on an entry, whatever its name).
CLAIM_OWN = """
local out = {}
for i = 3, #ARGV do
  local id = ARGV[i]
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1)
  if p[1] and p[1][2] == ARGV[2] and not redis.call('ZSCORE', KEYS[2], id) then
    local claimed = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, id)
    if claimed[1] then
      table.insert(out, {id, claimed[1][2], redis.call('HGET', KEYS[3], id), p[1][4] + 1})
    end
  end
end
return out
"""

# KEYS: stream, retry zset, attempts hash. ARGV: group, consumer, id, delay_ms, history_json.
# Parks a failed entry for its next attempt, due delay_ms from now by the server's clock, only if
# this consumer still owns it (a consumer that was stopped past the visibility timeout must not
# reschedule an entry another one took over).
SCHEDULE_RETRY = (
    _SERVER_MS
    + """
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if not p[1] or p[1][2] ~= ARGV[2] then
  return 0
end
redis.call('HSET', KEYS[3], ARGV[3], ARGV[5])
redis.call('ZADD', KEYS[2], now_ms + tonumber(ARGV[4]), ARGV[3])
return 1
"""
)

# KEYS: stream. ARGV: group, consumer.
# Deletes a consumer only if it owns nothing: DELCONSUMER drops the consumer's pending entries.
PRUNE_CONSUMER = """
local p = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if p[1] then
  return 0
end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 1
"""

# KEYS: stream. ARGV: group, consumer, idle_ms, ids...
# Resets (idle_ms = 0: extends the lease) or raises (releases) the idle time of entries this
# consumer still owns, without touching entries another consumer has claimed meanwhile.
SET_IDLE = """
local n = 0
for i = 4, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if p[1] and p[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'IDLE', tonumber(ARGV[3]), 'JUSTID')
    n = n + 1
  end
end
return n
"""

# KEYS: dead letters, source stream. ARGV: dead letter id, then the new entry's field/value pairs.
# Moves one dead letter back to its stream: copy and delete in one step, or nothing if it is gone
# (another redrive or a purge took it).
REDRIVE_DEAD_LETTER = """
if #redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1]) == 0 then
  return false
end
local id = redis.call('XADD', KEYS[2], '*', unpack(ARGV, 2))
redis.call('XDEL', KEYS[1], ARGV[1])
return id
"""
