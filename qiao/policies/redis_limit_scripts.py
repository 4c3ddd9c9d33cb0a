"""The Lua side of :mod:`.redis_limits`: the batch script (acquires and settles, in order) and
the fleet heartbeat. Kept apart so the Python module stays readable; the arithmetic is the
GCRA of :mod:`.limits` (all integers, debts in request·ms and token·ms)."""

from __future__ import annotations

__all__ = ["BATCH", "HEARTBEAT"]

_LIB = """
local P = 60000
local function drained(debt, limit, el)
  if limit < 0 then return 0 end
  if limit == 0 then return debt end
  local d = debt - el * limit
  if d < 0 then return 0 end
  return d
end
local function quota(debt, limit)
  if limit <= 0 then return 0, P end
  local rem = math.floor((limit * P - debt) / P)
  if rem < 0 then rem = 0 end
  return rem, math.ceil(debt / limit)
end
local function int(x) return string.format('%d', x) end
local function load(key, rpm, tpm, now)
  local h = redis.call('HMGET', key, 'r', 'k', 't')
  if not h[3] then return 0, 0 end
  local el = now - tonumber(h[3])
  if el < 0 then el = 0 end
  return drained(tonumber(h[1]) or 0, rpm, el), drained(tonumber(h[2]) or 0, tpm, el)
end
local function save(key, dr, dk, rpm, tpm, now)
  if dr == 0 and dk == 0 then redis.call('DEL', key) return end
  local ttl = 0
  if rpm > 0 then ttl = math.ceil(dr / rpm) end
  if tpm > 0 then ttl = math.max(ttl, math.ceil(dk / tpm)) end
  if rpm == 0 or tpm == 0 then ttl = P end
  redis.call('HSET', key, 'r', int(dr), 'k', int(dk), 't', int(now))
  redis.call('PEXPIRE', key, int(ttl + 1000))
end
local tm = redis.call('TIME')
local now = tonumber(tm[1]) * 1000 + math.floor(tonumber(tm[2]) / 1000)
"""

# One acquire: scope i has its debt hash at KEYS[k + 2i - 2] and its slot set at
# KEYS[k + 2i - 1]; KEYS[k + 2n] is the ticket's tombstone (set when its caller gave up: then
# do nothing). lim[i] = {rpm, tpm, concurrency}, -1 for no limit.
# Reply: {1, rpm, left, reset ms, tpm, left, reset ms, dr1, dk1, ..., drn, dkn} with the
#        tightest scopes and every scope's debts after admission, or
#        {0, scope index, kind 1|2|3, wait ms, rpm, left, reset, tpm, left, reset, dr, dk}
#        with the refusing scope's figures, or {2} for a tombstoned ticket.
_ACQUIRE = """
local function acquire(k, n, lim, ticket, tokens, lease)
  if ticket ~= '' and redis.call('EXISTS', KEYS[k + 2 * n]) == 1 then return {2} end
  local dr, dk = {}, {}
  for i = 1, n do
    local rpm, tpm, cc = lim[i][1], lim[i][2], lim[i][3]
    local key = KEYS[k + 2 * i - 2]
    dr[i], dk[i] = 0, 0
    if rpm >= 0 or tpm >= 0 then dr[i], dk[i] = load(key, rpm, tpm, now) end
    local kind, wait = 0, 0
    if rpm >= 0 then
      local over = dr[i] + P - rpm * P
      if rpm == 0 then kind, wait = 1, P
      elseif over > 0 then kind, wait = 1, math.ceil(over / rpm) end
    end
    if kind == 0 and tpm >= 0 then
      local over = dk[i] + math.min(tokens, tpm) * P - tpm * P
      if tpm == 0 then kind, wait = 2, P
      elseif over > 0 then kind, wait = 2, math.ceil(over / tpm) end
    end
    if kind == 0 and cc >= 0 then
      redis.call('ZREMRANGEBYSCORE', KEYS[k + 2 * i - 1], '-inf', now)
      if redis.call('ZCARD', KEYS[k + 2 * i - 1]) >= cc then kind, wait = 3, 1000 end
    end
    if kind ~= 0 then
      local rl, rs = quota(dr[i], rpm)
      local kl, ks = quota(dk[i], tpm)
      return {0, i, kind, wait, rpm, rl, rs, tpm, kl, ks, dr[i], dk[i]}
    end
  end
  local out = {1, -1, 0, 0, -1, 0, 0}
  for i = 1, n do
    local rpm, tpm, cc = lim[i][1], lim[i][2], lim[i][3]
    if rpm >= 0 or tpm >= 0 then
      if rpm >= 0 then
        dr[i] = dr[i] + P
        local left, reset = quota(dr[i], rpm)
        if out[2] < 0 or left < out[3] then out[2], out[3], out[4] = rpm, left, reset end
      end
      if tpm >= 0 then
        dk[i] = dk[i] + tokens * P
        local left, reset = quota(dk[i], tpm)
        if out[5] < 0 or left < out[6] then out[5], out[6], out[7] = tpm, left, reset end
      end
      save(KEYS[k + 2 * i - 2], dr[i], dk[i], rpm, tpm, now)
    end
    if cc >= 0 then
      redis.call('ZADD', KEYS[k + 2 * i - 1], int(now + lease), ticket)
      redis.call('PEXPIRE', KEYS[k + 2 * i - 1], int(lease + 1000))
    end
    out[6 + 2 * i], out[7 + 2 * i] = dr[i], dk[i]
  end
  return out
end
"""

# One settle: KEYS as for acquire without the tombstone; corrects TPM by delta tokens and
# frees the ticket's slots.
_SETTLE = """
local function settle(k, n, lim, ticket, delta)
  for i = 1, n do
    local rpm, tpm, cc = lim[i][1], lim[i][2], lim[i][3]
    if tpm >= 0 and delta ~= 0 then
      local dr, dk = load(KEYS[k + 2 * i - 2], rpm, tpm, now)
      dk = dk + delta * P
      if dk < 0 then dk = 0 end
      save(KEYS[k + 2 * i - 2], dr, dk, rpm, tpm, now)
    end
    if cc >= 0 then redis.call('ZREM', KEYS[k + 2 * i - 1], ticket) end
  end
  return {1}
end
"""

# ARGV[1]: lease ms; then per operation: 'a' | 's', scope count n, ticket id, tokens (acquire)
# or token delta (settle), then rpm, tpm, concurrency per scope. KEYS: each operation's keys in
# turn (2n + 1 for an acquire, 2n for a settle). Reply: one reply per operation, in order.
BATCH = (
    _LIB
    + _ACQUIRE
    + _SETTLE
    + """
local lease = tonumber(ARGV[1])
local replies = {}
local a, k = 2, 1
while a <= #ARGV do
  local op, n, ticket, amount = ARGV[a], tonumber(ARGV[a + 1]), ARGV[a + 2], tonumber(ARGV[a + 3])
  local lim = {}
  for i = 1, n do
    local b = a + 1 + 3 * i
    lim[i] = {tonumber(ARGV[b]), tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2])}
  end
  if op == 'a' then
    replies[#replies + 1] = acquire(k, n, lim, ticket, amount, lease)
    k = k + 2 * n + 1
  else
    replies[#replies + 1] = settle(k, n, lim, ticket, amount)
    k = k + 2 * n
  end
  a = a + 4 + 3 * n
end
return replies
"""
)

# KEYS[1]: the fleet's sorted set; ARGV: this node's id, its entry's lifetime in ms.
# Reply: how many entries are live, this one included.
HEARTBEAT = """
local tm = redis.call('TIME')
local now = tonumber(tm[1]) * 1000 + math.floor(tonumber(tm[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('PEXPIRE', KEYS[1], ttl)
return redis.call('ZCARD', KEYS[1])
"""
