-- Transactional outbox: every offer change writes its notification event here in the same
-- transaction; the relay publishes pending rows (sent_at IS NULL) with publisher confirms
-- and sets sent_at once the broker acknowledged them.
CREATE TABLE outbox (
    id         BIGSERIAL   PRIMARY KEY,
    event_id   UUID        NOT NULL UNIQUE,
    payload    JSONB       NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    sent_at    TIMESTAMPTZ,
    attempts   INTEGER     NOT NULL DEFAULT 0,
    last_error TEXT
);

-- The relay only ever scans pending rows, in id order.
CREATE INDEX outbox_pending_idx ON outbox (id) WHERE sent_at IS NULL;
