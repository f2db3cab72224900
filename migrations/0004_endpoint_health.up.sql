-- Migration 4: each endpoint's run of failures since its last 2xx answer
-- (gate.go's health), kept with its breaker so that the write that
-- changes it is the one that reports it, once, whichever pod makes it.
-- Columns with constant defaults change only the catalog.
ALTER TABLE adcp_webhook_breakers
    ADD COLUMN IF NOT EXISTS failing_since timestamptz,
    ADD COLUMN IF NOT EXISTS failed_deliveries integer NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS failing boolean NOT NULL DEFAULT false;

INSERT INTO adcp_webhook_deliveries_schema_version (version, name) VALUES (4, 'endpoint_health')
ON CONFLICT (version) DO NOTHING;
