-- publish_fenced.lua publishes a batch of messages and stores a cursor, as
-- one atomic step, only for the holder of a lease (see publish_fn.lua,
-- prepended, and Coordinator in lease.go).
--
-- KEYS[1]   updraft:lease:{<name>}   the lease: its holder's token
-- KEYS[2]   updraft:cursor:{<name>}  the cursor
-- KEYS[3..] per message, its topic's meta and history keys
-- ARGV[1]   the caller's token
-- ARGV[2]   the cursor to store
-- ARGV[3..] epoch candidate, history size, history TTL (ms), then per
--           message its channel and body
--
-- Returns {epoch1, seq1, epoch2, seq2, ...}, or the error LEASE_LOST with
-- nothing written when the lease is not the caller's.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('LEASE_LOST')
end
local out = publish_all(2, 2)
redis.call('SET', KEYS[2], ARGV[2])
return out
