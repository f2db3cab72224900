-- Migration 6: multi-tenant signing (Routing.Tenant). The tenant whose
-- current signing key signs each attempt; the key itself is never stored.
ALTER TABLE adcp_webhook_deliveries ADD COLUMN IF NOT EXISTS tenant text;

INSERT INTO adcp_webhook_deliveries_schema_version (version, name) VALUES (6, 'tenant')
ON CONFLICT (version) DO NOTHING;
