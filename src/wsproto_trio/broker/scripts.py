"""Scripts that Redis runs atomically: stream positions, history, room presence.

Every script touches the keys of one stream only, all in one hash slot, so the
same scripts run on one Redis and on a Redis Cluster (where the room's keys and
its sharded channel share the slot of ``{room}``). Work that spans rooms
(leases, reaping, re-registration) is done from Python as a series of these
per-room calls plus server-level commands; each per-room step is idempotent and
conditional on the member's owner, so racing reapers announce a member once.

Keys, under a prefix (default ``wsproto:``):
- ``room:{R}:meta``       hash ``epoch``, ``top``: room R's stream position
- ``room:{R}:log``        list: its latest ``HISTORY_SIZE`` envelopes, oldest first
- ``room:{R}:members``    hash user -> ``sid \\n left \\n joined \\n record``
- ``{chat}:meta``, ``{chat}:log``  the chat's stream
- ``servers``             sorted set server id -> lease expiry (ms, Redis clock)
- ``server:<id>``         hash ``connections``
- ``server:<id>:members`` set of ``user \\n room`` that the server owns
- ``rooms``               set: index of rooms that may have members

Envelopes are never built here: a positioned message comes as the ``head`` and
``tail`` of its Python-encoded envelope (``core.messages.Template``), and a
member's JoinedRoom/LeftRoom texts are stored with it by the server that owns it.
A stream's meta and log expire ``HISTORY_TTL`` after its last message; a new
epoch (a candidate from the caller) is taken whenever the meta is missing.
"""

# The position helper shared by the stream scripts (Lua has no modules here).
_META = """
local function meta(ttl)
  local epoch = redis.call('HGET', KEYS[1], 'epoch')
  if not epoch then
    epoch = ARGV_EPOCH
    redis.call('HSET', KEYS[1], 'epoch', epoch, 'top', 0)
    redis.call('PEXPIRE', KEYS[1], ttl)
    redis.call('DEL', KEYS[2])
  end
  return epoch
end
"""


def _with_meta(body: str, epoch_arg: int) -> str:
    return _META.replace("ARGV_EPOCH", f"ARGV[{epoch_arg}]") + body


# KEYS meta, log; ARGV channel, head, tail, epoch candidate, ttl ms, size, publish command.
PUBLISH_MESSAGE = _with_meta(
    """
local ttl = tonumber(ARGV[5])
local epoch = meta(ttl)
local top = redis.call('HINCRBY', KEYS[1], 'top', 1)
local env = ARGV[2] .. top .. ',"epoch":"' .. epoch .. '"' .. ARGV[3]
local size = tonumber(ARGV[6])
if size > 0 then
  redis.call('RPUSH', KEYS[2], env)
  redis.call('LTRIM', KEYS[2], -size, -1)
  redis.call('PEXPIRE', KEYS[2], ttl)
end
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call(ARGV[7], ARGV[1], top .. ' ' .. epoch .. ' ' .. env)
return {top, epoch}
""",
    4,
)

# KEYS meta, log; ARGV epoch candidate, ttl ms, with log (0/1) -> {epoch, top, log...}.
STREAM = _with_meta(
    """
local epoch = meta(tonumber(ARGV[2]))
local out = {epoch, tonumber(redis.call('HGET', KEYS[1], 'top'))}
if ARGV[3] == '1' then
  for _, env in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do table.insert(out, env) end
end
return out
""",
    1,
)

# KEYS meta, log, members; ARGV epoch candidate, ttl ms, with log, user, value,
# joined envelope, channel, publish command.
# -> {epoch, top, #log, log..., user, record, user, record, ...}
JOIN = _with_meta(
    """
redis.call('HSET', KEYS[3], ARGV[4], ARGV[5])
redis.call(ARGV[8], ARGV[7], ARGV[6])
local epoch = meta(tonumber(ARGV[2]))
local out = {epoch, tonumber(redis.call('HGET', KEYS[1], 'top')), 0}
if ARGV[3] == '1' then
  local log = redis.call('LRANGE', KEYS[2], 0, -1)
  out[3] = #log
  for _, env in ipairs(log) do table.insert(out, env) end
end
local all = redis.call('HGETALL', KEYS[3])
for i = 1, #all, 2 do
  table.insert(out, all[i])
  table.insert(out, string.match(all[i + 1], '^[^\\n]*\\n[^\\n]*\\n[^\\n]*\\n(.*)$') or '')
end
return out
""",
    1,
)

# KEYS members; ARGV user, owner sid, channel, publish command -> {removed, remaining}.
# Removes the member only if ``sid`` still owns it, and then announces the
# LeftRoom text stored with it: a leave and any number of racing reapers
# announce a member exactly once.
LEAVE = """
local v = redis.call('HGET', KEYS[1], ARGV[1])
local removed = 0
if v then
  local nl = string.find(v, '\\n', 1, true)
  if string.sub(v, 1, nl - 1) == ARGV[2] then
    redis.call('HDEL', KEYS[1], ARGV[1])
    local nl2 = string.find(v, '\\n', nl + 1, true)
    redis.call(ARGV[4], ARGV[3], string.sub(v, nl + 1, nl2 - 1))
    removed = 1
  end
end
return {removed, redis.call('HLEN', KEYS[1])}
"""

# KEYS members; ARGV user, value, sid, joined envelope, channel, publish command -> added.
# Re-registration after an outage or after being reaped: (re)adds the member
# owned by ``sid`` and announces it as a new join when it was not there.
ENSURE = """
local v = redis.call('HGET', KEYS[1], ARGV[1])
if v and string.sub(v, 1, #ARGV[3] + 1) == ARGV[3] .. '\\n' then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call(ARGV[6], ARGV[5], ARGV[4])
return 1
"""

# KEYS servers, server hash; ARGV id, ttl ms, connections -> 1 if the lease existed.
RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local existed = redis.call('ZSCORE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('HSET', KEYS[2], 'connections', ARGV[3])
redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[2]) * 2)
if existed then return 1 else return 0 end
"""

# KEYS servers -> ids whose lease has lapsed (Redis clock).
EXPIRED = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
"""

# KEYS servers -> ids whose lease is live.
LIVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')
"""
