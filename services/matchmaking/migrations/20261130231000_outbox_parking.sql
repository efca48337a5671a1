-- Rows the relay can never publish (a payload that is not an event, or breaks the contract)
-- are parked: taken out of the claim, so they cannot fill every batch and stop the relay.
-- They stay for an operator to fix and release (`UPDATE outbox SET parked_at = NULL ...`),
-- counted by the matchmaking_outbox_parked gauge, which an alert watches.
ALTER TABLE outbox ADD COLUMN parked_at TIMESTAMPTZ;

-- The claim scans pending, unparked rows in id order.
DROP INDEX IF EXISTS outbox_pending_idx;
CREATE INDEX outbox_claimable_idx ON outbox (id) WHERE sent_at IS NULL AND parked_at IS NULL;
-- The parked gauge counts these.
CREATE INDEX outbox_parked_idx ON outbox (id) WHERE parked_at IS NOT NULL;
-- The retention purge deletes sent rows by age.
CREATE INDEX outbox_sent_at_idx ON outbox (sent_at) WHERE sent_at IS NOT NULL;
