-- Trade offers: one proposer offers items for items of one receiver.
CREATE TABLE trade_offers (
    id                 BIGSERIAL PRIMARY KEY,
    proposer_id        TEXT        NOT NULL CHECK (length(proposer_id) BETWEEN 1 AND 100),
    receiver_id        TEXT        NOT NULL CHECK (length(receiver_id) BETWEEN 1 AND 100),
    offered_item_ids   BIGINT[]    NOT NULL CHECK (cardinality(offered_item_ids) >= 1),
    requested_item_ids BIGINT[]    NOT NULL CHECK (cardinality(requested_item_ids) >= 1),
    status             TEXT        NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'accepted', 'rejected', 'cancelled', 'completed')),
    message            TEXT,
    created_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    responded_at       TIMESTAMPTZ,
    CHECK (proposer_id <> receiver_id)
);

CREATE INDEX trade_offers_proposer_idx ON trade_offers (proposer_id, created_at DESC);
CREATE INDEX trade_offers_receiver_idx ON trade_offers (receiver_id, created_at DESC);
-- GET /offers/by-item/{item_id} searches both arrays.
CREATE INDEX trade_offers_offered_items_idx ON trade_offers USING GIN (offered_item_ids);
CREATE INDEX trade_offers_requested_items_idx ON trade_offers USING GIN (requested_item_ids);
