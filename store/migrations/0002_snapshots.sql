-- Schema 2: snapshots of the recovery state, the indexes that reading one objective and pruning
-- need, and an event counter (so `info` does not count the whole table).
CREATE TABLE snapshots (
    seq INTEGER PRIMARY KEY,
    at_ms BIGINT NOT NULL,
    body BLOB NOT NULL
);

CREATE INDEX events_by_objective ON events (objective, seq);
CREATE INDEX objectives_by_end ON objectives (status, ended_at_ms);

INSERT INTO meta (key, value) SELECT 'events', COUNT(*) FROM events;
