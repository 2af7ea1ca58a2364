-- The Redis engine's atomic steps. Key schema (P = prefix, Q = queue; {Q} is the Cluster hash
-- tag, so every key of one queue lives in one slot):
--
--   P:{Q}:s:<0-9>   stream per priority band; entries {t = task id, b = body, n = earlier
--                   deliveries}, always read by field name (an entry a foreign client added may
--                   lack any of them: it is delivered with its problem); consumer group
--                   "workers"; acked entries are XDEL-ed at once
--   P:{Q}:ids       hash task id -> where it is: "s <band> <entry id>" (in a stream: leased
--                   while the entry is pending and its lease runs, else waiting) or
--                   "d <band> <n>" (delayed: an ETA, or a release with a delay)
--   P:{Q}:delayed   sorted set task id -> due time in ms
--   P:{Q}:dbody     hash task id -> body of a delayed message
--   P:{Q}:dead      dead-letter stream {t, q = queue, b, r = reason, f = failed at (s), p = band}
--
-- Keys outside any queue (each in a slot of its own on a Cluster):
--
--   P:queues        set of the queues that may hold something: a publish adds its queue after
--                   its messages are in; one found empty is removed, then `forget` below
--                   deletes its keys if it still holds nothing (else it is added back)
--   P:kv:<key>      a state store value (`incr` below for counters)
--   P:set:<key>     a state store set (`set_add` below)
--   P:rate:<key>    sorted set of the grants of a sliding window (`rate` below)
--   P:r:<id>        a task's result (`ack` below stores it with the ack); announced on the
--                   channel P:done:<id>
--   P:p:<id>, P:g:<id>, P:gc:<id>   progress, a generator's items (list) and its closed flag
--
-- Queue scripts take KEYS[1] = P:{Q}:ids (for routing) and ARGV[1] = "P:{Q}", ARGV[2] = group.
-- A section starts with "--- name"; the prelude before the first section is shared by all.
-- A delivery's lease token is its pending-entry delivery count: a reclaimed entry's old token no
-- longer matches, so the worker that lost the lease settles nothing.

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function split(meta)
  local kind, band, rest = string.match(meta, '^(%a) (%d) (.+)$')
  return kind, band, rest
end

-- The value of field `name` in a stream entry's flat field list, or nil.
local function field(fields, name)
  for i = 1, #fields - 1, 2 do
    if fields[i] == name then return fields[i + 1] end
  end
  return nil
end

-- The body of stream entry `eid`: `given` when set, else its field b ('' when it has none).
local function body_of(key, eid, given)
  if given then return given end
  local entry = redis.call('XRANGE', key, eid, eid)[1]
  return (entry and field(entry[2], 'b')) or ''
end

-- The pending entry {id, consumer, idle, count} of a stream entry, or nil.
local function pending(key, group, eid)
  local ok, p = pcall(redis.call, 'XPENDING', key, group, eid, eid, 1)
  if ok and p[1] then return p[1] end
  return nil
end

-- Whether a pending entry's lease still runs (an idle time under `lease` ms).
local function leased(key, group, eid, lease)
  local p = pending(key, group, eid)
  return p ~= nil and p[3] < tonumber(lease)
end

local function owned(key, group, consumer, eid, token)
  local p = pending(key, group, eid)
  return p ~= nil and p[2] == consumer and tostring(p[4]) == token
end

-- Drop the ids entry of `id` when it points at this stream entry (a foreign entry may carry the
-- id of another message).
local function forget(ids, id, band, eid)
  if id and redis.call('HGET', ids, id) == 's ' .. band .. ' ' .. eid then
    redis.call('HDEL', ids, id)
  end
end

-- A stream may be made here without its group: the fetch makes the group (from id 0, so
-- nothing added before is missed) before it reads or blocks on the stream.
local function enqueue(base, ids, id, band, body, n)
  local eid = redis.call('XADD', base .. ':s:' .. band, '*', 't', id, 'b', body, 'n', n)
  if id ~= '' then redis.call('HSET', ids, id, 's ' .. band .. ' ' .. eid) end
end

local function hold(base, ids, id, band, body, n, due)
  redis.call('ZADD', base .. ':delayed', due, id)
  redis.call('HSET', base .. ':dbody', id, body)
  redis.call('HSET', ids, id, 'd ' .. band .. ' ' .. n)
end

--- publish
-- KEYS[2] P:queues, which gets ARGV[3] (the queue's name) once the messages are in (absent on a
-- Cluster, where the set is in another slot: the caller adds it after); ARGV[4..]: groups of
-- (task id, band, due ms or "", body). Returns how many were new.
local base, now, added = ARGV[1], nil, 0
for i = 4, #ARGV, 4 do
  local id, band, due, body = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  if redis.call('HEXISTS', KEYS[1], id) == 0 then
    if due ~= '' then now = now or now_ms() end  -- TIME only when a message has a due time
    if due ~= '' and tonumber(due) > now then
      hold(base, KEYS[1], id, band, body, '0', due)
    else
      enqueue(base, KEYS[1], id, band, body, '0')
    end
    added = added + 1
  end
end
if KEYS[2] then redis.call('SADD', KEYS[2], ARGV[3]) end
return added

--- fetch
-- ARGV[3] consumer, [4] count, [5] lease ms, [6] "1" to reclaim expired leases, [7] "1" when
-- the caller may block next (every band's stream and group are then made to exist). Moves due
-- delayed messages to their streams, then leases up to count messages, highest band first,
-- reclaimed ones before new ones within a band. The entries' fields go back as they are: the
-- caller reads them by name, so one malformed entry never fails the batch.
-- Returns {{band, entry id, flat fields, token}..., 1 when every band is ready for a blocking
-- XREADGROUP (else 0), next due ms or -1}.
local base, group, consumer = ARGV[1], ARGV[2], ARGV[3]
local left, lease, now = tonumber(ARGV[4]), ARGV[5], now_ms()
local delayed = base .. ':delayed'
for _, id in ipairs(redis.call('ZRANGEBYSCORE', delayed, '-inf', now, 'LIMIT', 0, 1000)) do
  local meta = redis.call('HGET', KEYS[1], id)
  local body = redis.call('HGET', base .. ':dbody', id)
  redis.call('ZREM', delayed, id)
  redis.call('HDEL', base .. ':dbody', id)
  if meta and body then
    local _, band, n = split(meta)
    enqueue(base, KEYS[1], id, band or '0', body, n or '0')  -- (a meta written by someone else)
  end
end
local out, missing = {}, {}
for band = 9, 0, -1 do
  if left <= 0 then break end
  local key = base .. ':s:' .. band
  if redis.call('EXISTS', key) == 0 then
    table.insert(missing, key)
  else
    if ARGV[6] == '1' then
      local ok, stale = pcall(redis.call, 'XPENDING', key, group, 'IDLE', lease, '-', '+', left)
      if not ok then  -- a stream made by a publish, or the group was lost: nothing is leased
        redis.call('XGROUP', 'CREATE', key, group, '0')
        stale = {}
      end
      for _, p in ipairs(stale) do
        local entry = redis.call('XCLAIM', key, group, consumer, lease, p[1])[1]
        if entry and entry[2] then
          table.insert(out, {band, entry[1], entry[2], p[4] + 1})
          left = left - 1
        end
      end
    end
    if left > 0 then
      local ok, got = pcall(redis.call, 'XREADGROUP', 'GROUP', group, consumer,
        'COUNT', left, 'STREAMS', key, '>')
      if not ok then  -- a stream made by a publish, or the group was lost (a FLUSHALL)
        redis.call('XGROUP', 'CREATE', key, group, '0')
        got = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', left, 'STREAMS', key, '>')
      end
      if got then
        for _, entry in ipairs(got[1][2]) do
          table.insert(out, {band, entry[1], entry[2], 1})
          left = left - 1
        end
      end
    end
  end
end
local ready = 0
if left > 0 and ARGV[7] == '1' then  -- the caller will block in XREADGROUP on every band
  -- (with count left, every band was read above, so only the missing streams need a group)
  for _, key in ipairs(missing) do
    redis.call('XGROUP', 'CREATE', key, group, '0', 'MKSTREAM')
  end
  ready = 1
end
local first = redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')
return {out, ready, first[2] and tonumber(first[2]) or -1}

--- ack
-- Settles deliveries of one queue in one call. ARGV[3] consumer; then 8 per delivery: the index in
-- KEYS of its stream, entry id, token, task id, the index in KEYS of its result key (0: no result
-- to store), result data, result ttl ms or "", channel to announce the result on.
-- Stores each result (even for a lost lease: the task did run), then settles it if still owned.
local group, consumer, mine, ids = ARGV[2], ARGV[3], {}, {}
for i = 4, #ARGV, 8 do
  local stream, eid, result = KEYS[tonumber(ARGV[i])], ARGV[i + 1], tonumber(ARGV[i + 4])
  if result > 0 then
    if ARGV[i + 6] ~= '' then
      redis.call('SET', KEYS[result], ARGV[i + 5], 'PX', ARGV[i + 6])
    else
      redis.call('SET', KEYS[result], ARGV[i + 5])
    end
    redis.call('PUBLISH', ARGV[i + 7], '1')
  end
  if owned(stream, group, consumer, eid, ARGV[i + 2]) then
    local eids = mine[stream] or {}
    mine[stream] = eids
    table.insert(eids, eid)
    table.insert(ids, ARGV[i + 3])
  end
end
for stream, eids in pairs(mine) do  -- one command per stream, not per entry
  redis.call('XACK', stream, group, unpack(eids))
  redis.call('XDEL', stream, unpack(eids))
end
if #ids > 0 then redis.call('HDEL', KEYS[1], unpack(ids)) end
return #ids

--- extend
-- KEYS[2] the stream; ARGV[3] consumer, [4] entry id, [5] token. Resets the entry's idle time.
if not owned(KEYS[2], ARGV[2], ARGV[3], ARGV[4], ARGV[5]) then return 0 end
redis.call('XCLAIM', KEYS[2], ARGV[2], ARGV[3], 0, ARGV[4], 'JUSTID')
return 1

--- release
-- KEYS[2] the stream; ARGV[3] consumer, [4] entry id, [5] token, [6] task id, [7] band,
-- [8] deliveries so far, [9] delay ms, [10] new body, or absent to keep the entry's own.
local base, group = ARGV[1], ARGV[2]
if not owned(KEYS[2], group, ARGV[3], ARGV[4], ARGV[5]) then return 0 end
local body = body_of(KEYS[2], ARGV[4], ARGV[10])
redis.call('XACK', KEYS[2], group, ARGV[4])
redis.call('XDEL', KEYS[2], ARGV[4])
local delay = tonumber(ARGV[9])
if delay > 0 then
  hold(base, KEYS[1], ARGV[6], ARGV[7], body, ARGV[8], now_ms() + delay)
else
  enqueue(base, KEYS[1], ARGV[6], ARGV[7], body, ARGV[8])
end
return 1

--- dead_letter
-- KEYS[2] the stream; ARGV[3] consumer, [4] entry id, [5] token, [6] task id, [7] band,
-- [8] queue name, [9] reason, [10] most dead letters kept, [11] the body to keep, or absent
-- for the entry's own.
local base, group = ARGV[1], ARGV[2]
if not owned(KEYS[2], group, ARGV[3], ARGV[4], ARGV[5]) then return 0 end
local body = body_of(KEYS[2], ARGV[4], ARGV[11])
redis.call('XACK', KEYS[2], group, ARGV[4])
redis.call('XDEL', KEYS[2], ARGV[4])
forget(KEYS[1], ARGV[6], ARGV[7], ARGV[4])
local t = redis.call('TIME')
redis.call('XADD', base .. ':dead', 'MAXLEN', '~', ARGV[10], '*', 't', ARGV[6], 'q', ARGV[8],
  'b', body, 'r', ARGV[9], 'f', t[1] .. '.' .. string.format('%06d', t[2]), 'p', ARGV[7])
return 1

--- locate
-- ARGV[3] task id, [4] lease ms. Returns "waiting", "delayed", "leased" or false.
local meta = redis.call('HGET', KEYS[1], ARGV[3])
if not meta then return false end
local kind, band, rest = split(meta)
if kind == 'd' then
  local due = redis.call('ZSCORE', ARGV[1] .. ':delayed', ARGV[3])
  if due and tonumber(due) <= now_ms() then return 'waiting' end
  return 'delayed'
end
if leased(ARGV[1] .. ':s:' .. band, ARGV[2], rest, ARGV[4]) then return 'leased' end
return 'waiting'

--- remove
-- ARGV[3] task id, [4] lease ms. Deletes a waiting or delayed message; returns 1 when it did,
-- 0 when the message is leased or this queue does not hold it.
local base, group, id = ARGV[1], ARGV[2], ARGV[3]
local meta = redis.call('HGET', KEYS[1], id)
if not meta then return 0 end
local kind, band, rest = split(meta)
if kind == 's' then
  local key = base .. ':s:' .. band
  if leased(key, group, rest, ARGV[4]) then return 0 end
  redis.call('XACK', key, group, rest)  -- an expired lease: its holder settles nothing now
  redis.call('XDEL', key, rest)
else
  redis.call('ZREM', base .. ':delayed', id)
  redis.call('HDEL', base .. ':dbody', id)
end
redis.call('HDEL', KEYS[1], id)
return 1

--- stats
-- Returns {ready, scheduled, running, dead letters}.
local base, group, ready, running = ARGV[1], ARGV[2], 0, 0
for band = 0, 9 do
  local key = base .. ':s:' .. band
  local held = redis.call('XLEN', key)
  if held > 0 then
    local ok, summary = pcall(redis.call, 'XPENDING', key, group)
    local busy = ok and summary[1] or 0
    running = running + busy
    ready = ready + held - busy
  end
end
return {ready, redis.call('ZCARD', base .. ':delayed'), running, redis.call('XLEN', base .. ':dead')}

--- forget
-- Deletes the keys of a queue that holds nothing: no entry in any band's stream (waiting or
-- leased), nothing delayed, no dead letter, no id. Returns 1 when it did, else 0.
local base = ARGV[1]
local streams = {base .. ':dead'}
for band = 0, 9 do table.insert(streams, base .. ':s:' .. band) end
for _, key in ipairs(streams) do
  if redis.call('XLEN', key) > 0 then return 0 end
end
if redis.call('EXISTS', KEYS[1], base .. ':delayed', base .. ':dbody') > 0 then return 0 end
redis.call('DEL', unpack(streams))  -- empty streams (and their groups) are not deleted by Redis
return 1

--- purge
-- ARGV[3] lease ms. Deletes waiting and delayed messages (not leased ones). Returns {how many,
-- how many entries its streams still hold (leased messages, dead letters)}.
local base, group, removed = ARGV[1], ARGV[2], 0
for band = 0, 9 do
  local key = base .. ':s:' .. band
  if redis.call('EXISTS', key) == 1 then
    local busy = {}
    local ok, p = pcall(redis.call, 'XPENDING', key, group, '-', '+', 1000000)
    if ok then
      for _, entry in ipairs(p) do busy[entry[1]] = entry[3] < tonumber(ARGV[3]) end
    end
    for _, entry in ipairs(redis.call('XRANGE', key, '-', '+')) do
      if not busy[entry[1]] then
        redis.call('XACK', key, group, entry[1])  -- an expired lease: its holder settles nothing
        redis.call('XDEL', key, entry[1])
        forget(KEYS[1], field(entry[2], 't'), band, entry[1])
        removed = removed + 1
      end
    end
  end
end
local delayed = base .. ':delayed'
for _, id in ipairs(redis.call('ZRANGE', delayed, 0, -1)) do
  redis.call('HDEL', KEYS[1], id)
  removed = removed + 1
end
redis.call('DEL', delayed, base .. ':dbody')
local left = redis.call('XLEN', base .. ':dead')
for band = 0, 9 do left = left + redis.call('XLEN', base .. ':s:' .. band) end
return {removed, left}

--- rate
-- KEYS[1] the window (P:rate:<key>); ARGV[1] limit, ARGV[2] period ms. A sliding log: at most
-- `limit` grants in any window of `period`. Returns "0" when granted, else the seconds until
-- the oldest grant leaves the window.
local limit, period = tonumber(ARGV[1]), tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - period)
local count = redis.call('ZCARD', KEYS[1])
if count < limit then
  redis.call('ZADD', KEYS[1], now, t[1] .. '.' .. t[2] .. ':' .. count)
  redis.call('PEXPIRE', KEYS[1], math.ceil(period))
  return '0'
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return tostring(math.max(tonumber(oldest[2]) + period - now, 1) / 1000)

--- incr
-- KEYS[1] the counter (P:kv:<key>); ARGV[1] amount, ARGV[2] ttl ms or "". The ttl applies
-- when this call makes the key: a live key keeps its expiry (or none).
local made = redis.call('EXISTS', KEYS[1]) == 0
local value = redis.call('INCRBY', KEYS[1], ARGV[1])
if made and ARGV[2] ~= '' then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return value

--- set_add
-- KEYS[1] the set (P:set:<key>); ARGV[1] member, ARGV[2] ttl ms or "" (renewed by each add).
-- Returns the set's size after the add.
redis.call('SADD', KEYS[1], ARGV[1])
if ARGV[2] ~= '' then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return redis.call('SCARD', KEYS[1])
