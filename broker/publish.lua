-- publish.lua publishes one message (see publish_fn.lua, prepended).
--
-- KEYS[1]  updraft:{<topic>}:meta
-- KEYS[2]  updraft:{<topic>}:history
-- ARGV     epoch candidate, history size, history TTL (ms), channel, body
--
-- Returns {epoch, seq}.
local epoch, seq = publish(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5])
flush(ARGV[3])
return {epoch, seq}
