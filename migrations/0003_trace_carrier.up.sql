-- Migration 3: the Observer's carrier (a W3C traceparent, say), stored
-- with each delivery so that its attempts, in any process, can link to
-- its acceptance. Adding a column without a default changes only the
-- catalog.
ALTER TABLE adcp_webhook_deliveries ADD COLUMN IF NOT EXISTS trace_carrier text;

INSERT INTO adcp_webhook_deliveries_schema_version (version, name) VALUES (3, 'trace_carrier')
ON CONFLICT (version) DO NOTHING;
