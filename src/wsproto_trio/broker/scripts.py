"""Presence scripts, run atomically by Redis (the rules are in ``presence.py``).

Keys, under a prefix (default ``wsproto:``):
- ``room:<room>``            hash user -> server id (the room's members)
- ``rooms``                  set of room names with at least one member
- ``server:<id>:members``    set of ``user\\nroom`` owned by that server
- ``server:<id>``            hash with ``connections``
- ``servers``                sorted set server id -> lease expiry (ms, Redis clock)

Leases use Redis's own clock (``TIME``), so servers with skewed clocks agree.
Reaping deletes and announces in one script: exactly one reaper wins.
"""

JOIN = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[1] .. '\\n' .. ARGV[3])
redis.call('SADD', KEYS[3], ARGV[3])
redis.call('PUBLISH', ARGV[4], ARGV[5])
return redis.call('HKEYS', KEYS[1])
"""

LEAVE = """
local removed = 0
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  removed = redis.call('HDEL', KEYS[1], ARGV[1])
end
redis.call('SREM', KEYS[2], ARGV[1] .. '\\n' .. ARGV[3])
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('SREM', KEYS[3], ARGV[3])
end
if removed == 1 then
  redis.call('PUBLISH', ARGV[4], ARGV[5])
end
return removed
"""

ROOMS = """
local names = redis.call('SMEMBERS', KEYS[1])
local out = {}
for _, name in ipairs(names) do
  local n = redis.call('HLEN', ARGV[1] .. 'room:' .. name)
  if n > 0 then
    table.insert(out, name)
    table.insert(out, n)
  end
end
return out
"""

SERVERS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local live = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')
local out = {}
for _, id in ipairs(live) do
  table.insert(out, id)
  table.insert(out, redis.call('HGET', ARGV[1] .. 'server:' .. id, 'connections') or '0')
end
return out
"""

RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local existed = redis.call('ZSCORE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('HSET', KEYS[2], 'connections', ARGV[3])
if existed then return 1 else return 0 end
"""

# Removes servers and their members, publishing LeftRoom for each member.
# ARGV[1] prefix; ARGV[2] a server id to remove unconditionally (its own clean
# exit), or '' to remove every server whose lease has lapsed.
REAP = """
local prefix = ARGV[1]
local dead
if ARGV[2] ~= '' then
  dead = {ARGV[2]}
else
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
end
local out = {}
for _, sid in ipairs(dead) do
  redis.call('ZREM', KEYS[1], sid)
  local mkey = prefix .. 'server:' .. sid .. ':members'
  for _, m in ipairs(redis.call('SMEMBERS', mkey)) do
    local nl = string.find(m, '\\n', 1, true)
    local user = string.sub(m, 1, nl - 1)
    local room = string.sub(m, nl + 1)
    local rkey = prefix .. 'room:' .. room
    if redis.call('HGET', rkey, user) == sid then
      redis.call('HDEL', rkey, user)
      if redis.call('EXISTS', rkey) == 0 then
        redis.call('SREM', prefix .. 'rooms', room)
      end
      local env = cjson.encode({channel = 'chat-room', message = {type = 'LeftRoom',
        contents = {room = room, user = user}}})
      redis.call('PUBLISH', 'room:' .. room, env)
      table.insert(out, sid)
      table.insert(out, room)
      table.insert(out, user)
    end
  end
  redis.call('DEL', mkey)
  redis.call('DEL', prefix .. 'server:' .. sid)
end
return out
"""

# Makes this server's presence equal to its live members after a reconnect or
# after finding itself reaped: entries it no longer has are removed (LeftRoom),
# missing ones are added (JoinedRoom). ARGV: prefix, server id, then tokens
# ``user\\nroom``; KEYS[1] the server's member set.
SYNC = """
local prefix = ARGV[1]
local sid = ARGV[2]
local want = {}
for i = 3, #ARGV do want[ARGV[i]] = true end
local function split(m)
  local nl = string.find(m, '\\n', 1, true)
  return string.sub(m, 1, nl - 1), string.sub(m, nl + 1)
end
local function announce(kind, room, user)
  redis.call('PUBLISH', 'room:' .. room, cjson.encode({channel = 'chat-room',
    message = {type = kind, contents = {room = room, user = user}}}))
end
for _, m in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if not want[m] then
    local user, room = split(m)
    local rkey = prefix .. 'room:' .. room
    redis.call('SREM', KEYS[1], m)
    if redis.call('HGET', rkey, user) == sid then
      redis.call('HDEL', rkey, user)
      if redis.call('EXISTS', rkey) == 0 then redis.call('SREM', prefix .. 'rooms', room) end
      announce('LeftRoom', room, user)
    end
  end
end
local added = 0
for i = 3, #ARGV do
  local user, room = split(ARGV[i])
  local rkey = prefix .. 'room:' .. room
  redis.call('SADD', KEYS[1], ARGV[i])
  if redis.call('HGET', rkey, user) ~= sid then
    redis.call('HSET', rkey, user, sid)
    redis.call('SADD', prefix .. 'rooms', room)
    announce('JoinedRoom', room, user)
    added = added + 1
  end
end
return added
"""
