-- One row per notification event. `event_id` is the event's own id (the AMQP message_id):
-- its unique constraint is what makes consumption idempotent (ON CONFLICT DO NOTHING), so a
-- redelivered event never makes a second row.
CREATE TABLE notifications (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id         UUID         NOT NULL,
    user_id          VARCHAR(100) NOT NULL,
    type             VARCHAR(50)  NOT NULL,
    title            VARCHAR(255) NOT NULL,
    body             TEXT         NOT NULL,
    related_user_id  VARCHAR(100),
    related_offer_id BIGINT,
    related_item_id  BIGINT,
    is_read          BOOLEAN      NOT NULL DEFAULT FALSE,
    read_at          TIMESTAMPTZ,
    -- When the change happened (the event's occurred_at); lists are ordered by it.
    occurred_at      TIMESTAMPTZ  NOT NULL,
    -- When this service stored the row.
    created_at       TIMESTAMPTZ  NOT NULL DEFAULT now(),
    CONSTRAINT notifications_event_id_key UNIQUE (event_id)
);

-- A user's list, newest first (GET /api/v1/notifications/{user_id}) and the per-user stats.
CREATE INDEX notifications_user_newest ON notifications (user_id, occurred_at DESC, id DESC);
-- unread_only lists and unread counts touch only the unread rows.
CREATE INDEX notifications_user_unread ON notifications (user_id, occurred_at DESC, id DESC)
    WHERE NOT is_read;
