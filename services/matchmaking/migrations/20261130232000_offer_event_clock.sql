-- The order a user sees per offer: each offer's events carry occurred_at from this per-offer
-- clock, taken from the database (one clock, not each replica's) and strictly increasing in
-- commit order (the row is locked until the change commits), so "completed" always sorts
-- after "accepted", whichever relay published it first or consumer stored it first.
-- A row outlives its offer (a withdrawal deletes the offer but still stamps its event).
CREATE TABLE offer_event_clock (
    offer_id BIGINT      PRIMARY KEY,
    last_at  TIMESTAMPTZ NOT NULL
);
