-- Schema 5: the cron schedules created through the HTTP API, so that a restart restores them.
--
-- One row per schedule, kept in the same transaction as the `schedule_created` (insert),
-- `schedule_paused`/`schedule_resumed` (`paused`, `changed_at_ms`), `schedule_deleted`
-- (delete) and `schedule_fired` (the latest fired slot and its objective) events, as the
-- declared agents are. It is an index and not a read of the log because pruning removes old
-- events that belong to no objective. `spec` is the JSON of the `ScheduleSpec` as created
-- (its `paused` is the column's); `changed_at_ms` is the time of the last create or resume,
-- before which a slot is never fired nor caught up. A schema 4 log holds no such event:
-- nothing to backfill.
CREATE TABLE schedules (
    name TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    paused INTEGER NOT NULL,
    created_seq BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    changed_at_ms BIGINT NOT NULL,
    last_slot_ms BIGINT,
    last_objective TEXT
);
