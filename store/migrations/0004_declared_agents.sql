-- Schema 4: the agents registered through the HTTP API, so that a restart registers them again.
--
-- One row per declared name, kept in the same transaction as the `agent_declared` (insert, or
-- a new id and configuration for the name) and `agent_undeclared` (delete) events, as the
-- objective index is. It is an index and not a read of the log because pruning removes old
-- agent events. `config` is the JSON of the agent's `[[agents]]` fields (an API key only by the
-- name of its variable); `declared_seq` is the event that first declared the name, so agents
-- come back in the order they were declared. A schema 3 log holds no such event: nothing to
-- backfill.
CREATE TABLE declared_agents (
    name TEXT PRIMARY KEY,
    agent BIGINT NOT NULL,
    config TEXT NOT NULL,
    declared_seq BIGINT NOT NULL
);
