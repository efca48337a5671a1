-- Chat rooms to create in the chat service for accepted offers (issue 16): written in the
-- transaction that accepts the offer, delivered by the chat-room relay (src/chat.rs) until the
-- chat service answers. One row per offer: the chat service keeps one room per trade offer.
CREATE TABLE chat_room_requests (
    trade_offer_id  BIGINT      PRIMARY KEY,
    user1_id        TEXT        NOT NULL,
    user2_id        TEXT        NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- When the relay may try next; a claim moves it ahead by a lease, so one relay at a time
    -- works on a row even with several replicas.
    next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    attempts        INTEGER     NOT NULL DEFAULT 0,
    last_error      TEXT,
    -- Set once the chat service answered: 'created' (201), 'existed' (it already had the
    -- room), or 'refused' (another 4xx: our request is wrong, retrying cannot help).
    done_at         TIMESTAMPTZ,
    outcome         TEXT
);

CREATE INDEX chat_room_requests_due_idx ON chat_room_requests (next_attempt_at)
    WHERE done_at IS NULL;
