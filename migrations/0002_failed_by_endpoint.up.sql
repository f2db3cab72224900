-- Migration 2: failed deliveries by endpoint (or tenant) key, newest
-- first, for operators' lists and bulk redelivery ("everything that failed
-- for buyer X during the outage"). Partial: only failed rows are indexed,
-- so accepting and delivering pay nothing for it.
CREATE INDEX IF NOT EXISTS adcp_webhook_deliveries_failed_key_idx
    ON adcp_webhook_deliveries (breaker_key, id) WHERE state = 'failed';

INSERT INTO adcp_webhook_deliveries_schema_version (version, name) VALUES (2, 'failed_by_endpoint')
ON CONFLICT (version) DO NOTHING;
