-- Deleted stays deleted: deleting a notification leaves a tombstone of its event id, and the
-- consumer never stores an event whose id has one (a late copy: a redriven dead letter, a
-- relay's duplicate after a lost confirm). Tombstones are purged after the tombstone
-- retention, longer than any redelivery is expected to take.
CREATE TABLE notification_tombstones (
    event_id   UUID        PRIMARY KEY,
    deleted_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The retention purges delete by age: tombstones by deleted_at, notifications by created_at.
CREATE INDEX notification_tombstones_deleted_at ON notification_tombstones (deleted_at);
CREATE INDEX notifications_created_at ON notifications (created_at);
