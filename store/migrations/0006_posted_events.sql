-- Schema 6: the events posted from outside (`POST /v1/events`) that `wait` tasks consume, so
-- that an event posted before its task starts survives a restart.
--
-- One row per `event_received`, inserted in the same transaction as that event; the
-- `wait_satisfied` that consumes it sets `consumed_objective`/`consumed_task` in the same
-- transaction. Rows are kept until they expire (a consumed one too, so that a sender's
-- idempotency key keeps answering the same event until then); each append that receives an
-- event deletes the rows that expired. An index and not a read of the log because these
-- events belong to no objective, and pruning may drop them. A schema 5 log holds no such
-- event: nothing to backfill.
CREATE TABLE posted_events (
    id TEXT PRIMARY KEY,
    key TEXT NOT NULL,
    payload TEXT NOT NULL,
    received_seq BIGINT NOT NULL,
    received_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    idempotency_key TEXT,
    consumed_objective TEXT,
    consumed_task BIGINT
);
CREATE INDEX posted_events_by_expiry ON posted_events (expires_at_ms);
