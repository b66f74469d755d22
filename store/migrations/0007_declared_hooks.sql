-- Schema 7: the webhooks declared through the HTTP API, so that a restart serves them again.
-- (Version 6 is another change's; a log may apply 7 before 6, as sqlx applies every known
-- version it has not applied yet.)
--
-- One row per declared name, kept in the same transaction as the `hook_declared` (insert, or
-- a new configuration for the name) and `hook_deleted` (delete) events, as the declared agents
-- are. It is an index and not a read of the log because pruning removes old events that belong
-- to no objective. `config` is the JSON of the hook's `[[hooks]]` fields: its secret only by
-- the name of its variable (`secret_env`), never the secret. `declared_seq` is the event that
-- declared it. A schema 5 log holds no such event: nothing to backfill.
CREATE TABLE declared_hooks (
    name TEXT PRIMARY KEY,
    config TEXT NOT NULL,
    declared_seq BIGINT NOT NULL
);
