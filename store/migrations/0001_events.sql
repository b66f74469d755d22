-- Schema 1: the event log, its counters, and the objective index.
--
-- `seq INTEGER PRIMARY KEY` makes the sequence number SQLite's rowid, so the log is stored in
-- seq order without a second index (a PostgreSQL schema would say BIGINT PRIMARY KEY). Every
-- other integer is BIGINT. `body` is the JSON of the whole EventRecord; `objective` and `kind`
-- repeat parts of it so they can be indexed and queried.
CREATE TABLE events (
    seq INTEGER PRIMARY KEY,
    at_ms BIGINT NOT NULL,
    objective TEXT NULL,
    kind TEXT NOT NULL,
    body TEXT NOT NULL
);

-- Counters maintained in the same transaction as each append.
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO meta (key, value) VALUES ('last_seq', 0), ('next_task', 1);

-- One row per submitted objective: its idempotency key, the fingerprint of what was submitted
-- (a u64 stored bit for bit as a signed BIGINT) and where it stands.
CREATE TABLE objectives (
    id TEXT PRIMARY KEY,
    idempotency_key TEXT NULL UNIQUE,
    fingerprint BIGINT NOT NULL,
    status TEXT NOT NULL,
    submitted_at_ms BIGINT NOT NULL,
    ended_at_ms BIGINT NULL
);
