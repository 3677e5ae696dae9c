-- publish_fenced.lua publishes a batch of messages and stores a cursor, as
-- one atomic step, only for the holder of a lease (see publish_fn.lua,
-- prepended, and Coordinator in lease.go).
--
-- KEYS[1]        updraft:lease:{<name>}   the lease: its holder's token
-- KEYS[2]        updraft:cursor:{<name>}  the cursor
-- KEYS[2+2i-1]   message i's topic meta key      (i = 1..n)
-- KEYS[2+2i]     message i's topic history key
-- ARGV[1]        the caller's token
-- ARGV[2]        the cursor to store
-- ARGV[3..5]     epoch candidate, history size, history TTL (ms)
-- ARGV[5+2i-1]   message i's channel
-- ARGV[5+2i]     message i's body
--
-- Returns {epoch1, seq1, epoch2, seq2, ...}, or the error LEASE_LOST with
-- nothing written when the lease is not the caller's.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('LEASE_LOST')
end
local out = {}
local n = (#KEYS - 2) / 2
for i = 1, n do
  local epoch, seq = publish(KEYS[1 + 2*i], KEYS[2 + 2*i], ARGV[3], ARGV[4], ARGV[5],
    ARGV[4 + 2*i], ARGV[5 + 2*i])
  out[2*i - 1] = epoch
  out[2*i] = seq
end
redis.call('SET', KEYS[2], ARGV[2])
return out
