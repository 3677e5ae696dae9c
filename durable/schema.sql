-- Durable history: messages of persistent topics, kept in PostgreSQL past
-- the broker's retention. Idempotent: it runs at every start-up, under an
-- advisory lock so that nodes starting together do not race.
CREATE SCHEMA IF NOT EXISTS updraft;

CREATE TABLE IF NOT EXISTS updraft.messages (
	topic     text   NOT NULL,
	epoch     text   NOT NULL,
	seq       bigint NOT NULL,
	event     text   NOT NULL,
	sender    text   NOT NULL DEFAULT '',
	ts        bigint NOT NULL,              -- publish time, Unix milliseconds
	data      bytea,                        -- the JSON exactly as published
	old       bytea,
	stored_at timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (topic, epoch, seq)
);

-- The newest epoch of a topic, and retention by age.
CREATE INDEX IF NOT EXISTS messages_topic_stored_at ON updraft.messages (topic, stored_at);
CREATE INDEX IF NOT EXISTS messages_stored_at ON updraft.messages (stored_at);
