-- Migration 7: encryption at rest (PostgresConfig.Encryption). A row whose
-- sealed_with is set holds its body, auth_credentials, payload_sha256 and
-- (in sealed_headers, with headers NULL) its headers as AES-256-GCM
-- ciphertexts under that key of the ring, each bound to its column and to
-- the delivery's idempotency key and URL.
ALTER TABLE adcp_webhook_deliveries ADD COLUMN IF NOT EXISTS sealed_with text,
    ADD COLUMN IF NOT EXISTS sealed_headers bytea;

INSERT INTO adcp_webhook_deliveries_schema_version (version, name) VALUES (7, 'sealed')
ON CONFLICT (version) DO NOTHING;
