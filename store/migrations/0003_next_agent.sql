-- Schema 3: the next agent id, kept like `next_task` so that agent ids stay unique across
-- restarts of the coordinator.
--
-- Backfilled as one past the highest agent id the log names, or 1. An agent id is stored as the
-- text `A7` (a bare number is accepted too, hence the LTRIM). `$.descriptor.id` is the id an
-- `agent_registered` event gives; `$.agent` is the agent the other kinds name, which still
-- counts when pruning removed a registration but kept a running objective's events. Every
-- attempt's agent appears in its `task_started` event, so the kinds that carry outputs need not
-- be parsed.
INSERT INTO meta (key, value)
SELECT 'next_agent', COALESCE(MAX(CAST(LTRIM(
    COALESCE(json_extract(body, '$.descriptor.id'), json_extract(body, '$.agent')), 'A'
) AS INTEGER)), 0) + 1
FROM events
WHERE kind IN ('agent_registered', 'agent_health_changed', 'agent_restarted',
               'agent_deregistered', 'task_started');
