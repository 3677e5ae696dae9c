-- publish_batch.lua publishes a batch of messages, in order, as one atomic
-- step (see publish_fn.lua, prepended).
--
-- KEYS      per message, its topic's meta and history keys
-- ARGV      epoch candidate, history size, history TTL (ms), then per
--           message its channel and body
--
-- Returns {epoch1, seq1, epoch2, seq2, ...}.
return publish_all(0, 0)
