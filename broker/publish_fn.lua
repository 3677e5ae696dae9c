-- publish_fn.lua defines publish(), flush() and publish_all(), shared by
-- publish.lua, publish_batch.lua and publish_fenced.lua (the Go side
-- prepends it to each): publish assigns the next position on one topic,
-- appends the message to the topic's history and publishes it live, as one
-- step of the calling script.
--
-- meta     updraft:{<topic>}:meta     hash: epoch, seq
-- hist     updraft:{<topic>}:history  stream: one entry "<seq>-0" per message,
--                                     field "p" = the encoded publication
-- epochNew epoch candidate, used when the topic starts a new epoch
-- size     history size (exact MAXLEN)
-- ttl      history TTL in milliseconds
-- channel  the topic's channel, updraft:msg:{<topic>}
-- body     the encoded publication
--
-- Returns epoch, seq. The topic's epoch and seq stay in the script's
-- cache (topics) after its first message: a batch reads each topic's meta
-- once and writes it once, in flush, which the calling script must run
-- last. Per message, only the history append and the PUBLISH remain.
local topics = {}

local function publish(meta, hist, epochNew, size, ttl, channel, body)
  local t = topics[meta]
  if not t then
    local m = redis.call('HMGET', meta, 'epoch', 'seq')
    local epoch, seq = m[1], tonumber(m[2]) or 0
    if not epoch or (seq > 0 and redis.call('EXISTS', hist) == 0) then
      -- A new topic, or its meta or history was lost (expiry, eviction, a
      -- Redis restart): start a new epoch, and drop any history left from
      -- the old one.
      epoch, seq = epochNew, 0
      redis.call('DEL', hist)
    end
    t = {epoch = epoch, seq = seq, hist = hist}
    topics[meta] = t
  end
  t.seq = t.seq + 1
  local seqText = string.format('%d', t.seq)
  redis.call('XADD', hist, 'MAXLEN', size, seqText .. '-0', 'p', body)
  redis.call('PUBLISH', channel, t.epoch .. ':' .. seqText .. ':' .. body)
  return t.epoch, t.seq
end

-- flush stores each published topic's epoch and seq and renews its keys'
-- TTL (ms).
local function flush(ttl)
  for meta, t in pairs(topics) do
    redis.call('HSET', meta, 'epoch', t.epoch, 'seq', string.format('%d', t.seq))
    redis.call('PEXPIRE', meta, ttl)
    redis.call('PEXPIRE', t.hist, ttl)
  end
end

-- publish_all(kb, ab) publishes a batch: KEYS after the first kb hold one
-- meta and one history key per message; ARGV after the first ab hold the
-- epoch candidate, history size and TTL, then one channel and one body per
-- message. Returns {epoch1, seq1, epoch2, seq2, ...}.
local function publish_all(kb, ab)
  local out = {}
  local n = (#KEYS - kb) / 2
  for i = 1, n do
    local epoch, seq = publish(KEYS[kb + 2*i - 1], KEYS[kb + 2*i], ARGV[ab + 1], ARGV[ab + 2], ARGV[ab + 3],
      ARGV[ab + 3 + 2*i - 1], ARGV[ab + 3 + 2*i])
    out[2*i - 1] = epoch
    out[2*i] = seq
  end
  flush(ARGV[ab + 3])
  return out
end
