-- publish_fn.lua defines publish(), shared by publish.lua and
-- publish_fenced.lua (the Go side prepends it to both): it assigns the next
-- position on one topic, appends the message to the topic's history and
-- publishes it live, as one step of the calling script.
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
-- Returns epoch, seq.
local function publish(meta, hist, epochNew, size, ttl, channel, body)
  local m = redis.call('HMGET', meta, 'epoch', 'seq')
  local epoch = m[1]
  local lost = (tonumber(m[2]) or 0) > 0 and redis.call('EXISTS', hist) == 0
  if not epoch or lost then
    -- A new topic, or its meta or history was lost (expiry, eviction, a
    -- Redis restart): start a new epoch, and drop any history left from
    -- the old one.
    epoch = epochNew
    redis.call('DEL', hist)
    redis.call('HSET', meta, 'epoch', epoch, 'seq', 0)
  end
  local seq = redis.call('HINCRBY', meta, 'seq', 1)
  local seqText = string.format('%d', seq)
  redis.call('XADD', hist, 'MAXLEN', size, seqText .. '-0', 'p', body)
  redis.call('PEXPIRE', meta, ttl)
  redis.call('PEXPIRE', hist, ttl)
  redis.call('PUBLISH', channel, epoch .. ':' .. seqText .. ':' .. body)
  return epoch, seq
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
  return out
end
