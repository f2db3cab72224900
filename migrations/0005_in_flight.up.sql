-- Migration 5: per-endpoint flow control (PostgresConfig.EndpointConcurrency).
-- The attempts in flight to each endpoint, which every claim counts, in all
-- processes: partial, so only running rows are in it (a few per worker).
CREATE INDEX IF NOT EXISTS adcp_webhook_deliveries_running_idx
    ON adcp_webhook_deliveries (breaker_key) WHERE state = 'running';
-- Each endpoint's unfinished deliveries by due time, replacing the index on
-- the key alone: a claim that finds the oldest due deliveries all at their
-- endpoints' cap takes the oldest of every other endpoint from it, one
-- index descent per endpoint, instead of reading past the capped backlog.
CREATE INDEX IF NOT EXISTS adcp_webhook_deliveries_breaker_due_idx
    ON adcp_webhook_deliveries (breaker_key, due_at) WHERE state IN ('pending', 'running');
DROP INDEX IF EXISTS adcp_webhook_deliveries_breaker_idx;

INSERT INTO adcp_webhook_deliveries_schema_version (version, name) VALUES (5, 'in_flight')
ON CONFLICT (version) DO NOTHING;
