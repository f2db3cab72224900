-- Schema of github.com/adcpkit/webhook's PostgresSupervisor with the
-- default table names: every migration in migrations/, in order. Generated:
-- go test -run TestSchemaFileIsTheMigrations -update-schema .
-- PostgresSupervisor.CreateSchema applies the migrations a database lacks;
-- migration tools can run the files in migrations/ instead (see README).

-- Migration 1 of github.com/adcpkit/webhook's PostgresSupervisor schema:
-- the tables as they were when migrations began (AdCP 3.2's payload
-- binding, re-emission and activity records included), and the table
-- that records which migrations have run. Idempotent, like every
-- migration: it can run again on tables it created.

-- The applied migrations, one row each.
CREATE TABLE IF NOT EXISTS adcp_webhook_deliveries_schema_version (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- One row per accepted delivery: the queue and, once finished, the record.
CREATE TABLE IF NOT EXISTS adcp_webhook_deliveries (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- pending -> running -> delivered | failed
    state             text NOT NULL
                      CHECK (state IN ('pending', 'running', 'delivered', 'failed')),
    -- pending: when the next attempt is due; running: when the lease expires
    -- and another worker may claim the row.
    due_at            timestamptz NOT NULL,
    lease_token       bigint,
    -- The half-open period whose probe slot a running attempt holds.
    probe_period      bigint,
    url               text NOT NULL,
    -- The exact bytes every attempt sends, under idempotency_key.
    body              bytea NOT NULL,
    idempotency_key   text NOT NULL,
    breaker_key       text NOT NULL,
    sequence_key      text,
    sequence_number   bigint,
    task_type         text,
    task_id           text,
    notification_type text,
    -- Legacy push-notification authentication. The credentials are a secret
    -- shared with the buyer: restrict who can read this table.
    auth_scheme       text,
    auth_credentials  bytea,
    -- Routing.Headers, sent with every attempt (a token, say: restrict
    -- readers as for the credentials).
    headers           jsonb,
    attempts          integer NOT NULL DEFAULT 0,
    -- Attempts lost: claimed, then the lease expired with no result written
    -- (the worker died). Bounded by PostgresConfig.MaxLostAttempts.
    lost_attempts     integer NOT NULL DEFAULT 0,
    accepted_at       timestamptz NOT NULL,
    -- The last redelivery (which does not move the retry horizon).
    redelivered_at    timestamptz,
    first_attempt_at  timestamptz,
    finished_at       timestamptz,
    last_status       integer,
    last_error        text,
    -- The body is BuildMCPBody's: a re-emission can rebuild it.
    mcp_body          boolean NOT NULL DEFAULT false,
    -- SHA-256 of the body's RFC 8785 canonical form: the payload the
    -- idempotency key is bound to.
    payload_sha256    bytea,
    -- Re-emission past the retry horizon: the delivery this one re-emits
    -- under a fresh key, and the one that re-emitted this one.
    reemission_of     bigint,
    reemitted_as      bigint,
    -- Copied into every attempt row, for activity records.
    notification_id   text,
    subscriber_id     text
);

-- The claim: due pending rows and running rows whose lease expired.
CREATE INDEX IF NOT EXISTS adcp_webhook_deliveries_due_idx
    ON adcp_webhook_deliveries (due_at) WHERE state IN ('pending', 'running');
-- Half-open probes and rescheduling when a breaker opens.
CREATE INDEX IF NOT EXISTS adcp_webhook_deliveries_breaker_idx
    ON adcp_webhook_deliveries (breaker_key) WHERE state IN ('pending', 'running');
-- Retention.
CREATE INDEX IF NOT EXISTS adcp_webhook_deliveries_finished_idx
    ON adcp_webhook_deliveries (finished_at) WHERE state IN ('delivered', 'failed');
-- Activity records of the unfinished notifications of a task or a
-- subscriber (partial: deliveries without a notification type pay nothing).
CREATE INDEX IF NOT EXISTS adcp_webhook_deliveries_task_idx
    ON adcp_webhook_deliveries (task_id) WHERE state IN ('pending', 'running') AND notification_type IS NOT NULL;
CREATE INDEX IF NOT EXISTS adcp_webhook_deliveries_subscriber_idx
    ON adcp_webhook_deliveries (subscriber_id) WHERE state IN ('pending', 'running') AND notification_type IS NOT NULL;
-- AdCP 3.2's payload binding: a key names one delivery (rows accepted
-- before the binding have no payload_sha256 and bind nothing).
CREATE UNIQUE INDEX IF NOT EXISTS adcp_webhook_deliveries_key_idx
    ON adcp_webhook_deliveries (idempotency_key) WHERE payload_sha256 IS NOT NULL;
-- Listing failed deliveries.
CREATE INDEX IF NOT EXISTS adcp_webhook_deliveries_failed_idx
    ON adcp_webhook_deliveries (id) WHERE state = 'failed';

-- One row per attempt: the audit log (the LogSink receives the same records).
CREATE TABLE IF NOT EXISTS adcp_webhook_attempts (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- NULL for a webhook refused at acceptance because its breaker was open.
    delivery_id       bigint REFERENCES adcp_webhook_deliveries (id) ON DELETE CASCADE,
    attempt_number    integer NOT NULL,
    max_attempts      integer NOT NULL,
    outcome           text NOT NULL CHECK (outcome IN ('success', 'failure', 'circuit_open')),
    http_status       integer,
    error_message     text,
    response_time_us  bigint NOT NULL,
    occurred_at       timestamptz NOT NULL,
    will_retry        boolean NOT NULL,
    next_retry_at     timestamptz,
    url               text NOT NULL,
    breaker_key       text NOT NULL,
    idempotency_key   text NOT NULL,
    sequence_key      text,
    sequence_number   bigint,
    task_type         text,
    task_id           text,
    notification_type text,
    payload_size      integer NOT NULL,
    -- The delivery's reemission_of, for the records of a re-emission.
    reemission_of     bigint,
    notification_id   text,
    subscriber_id     text,
    -- No response came in time (AdCP activity status timeout, as opposed
    -- to connection_error).
    timed_out         boolean NOT NULL DEFAULT false
);

CREATE INDEX IF NOT EXISTS adcp_webhook_attempts_delivery_idx
    ON adcp_webhook_attempts (delivery_id);
CREATE INDEX IF NOT EXISTS adcp_webhook_attempts_task_idx
    ON adcp_webhook_attempts (task_id);
-- Activity records of a subscriber or a task, newest first.
CREATE INDEX IF NOT EXISTS adcp_webhook_attempts_subscriber_idx
    ON adcp_webhook_attempts (subscriber_id, occurred_at) WHERE subscriber_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS adcp_webhook_attempts_activity_idx
    ON adcp_webhook_attempts (task_id, occurred_at) WHERE notification_type IS NOT NULL;
-- Retention of refusals, which belong to no delivery.
CREATE INDEX IF NOT EXISTS adcp_webhook_attempts_refused_idx
    ON adcp_webhook_attempts (occurred_at) WHERE delivery_id IS NULL;

-- One row per breaker key that has ever failed: the endpoint gate's state
-- (gate.go is the state machine; these rows only store it). Closed gates
-- without failures need no row.
CREATE TABLE IF NOT EXISTS adcp_webhook_breakers (
    breaker_key text PRIMARY KEY,
    state       text NOT NULL DEFAULT 'closed'
                CHECK (state IN ('closed', 'open', 'half_open')),
    failures    integer NOT NULL DEFAULT 0,
    successes   integer NOT NULL DEFAULT 0,
    opened_at   timestamptz,
    -- Counts half-open periods, so a late probe cannot free a newer slot.
    period      bigint NOT NULL DEFAULT 0,
    -- When an open gate lets a probe through (opened_at + OpenTimeout, as
    -- the gate computed it); NULL unless open.
    retry_at    timestamptz,
    -- Bumped by every write: a completion persists the gate's new state
    -- only if the row is still at the version it computed from. (0 stands
    -- for "no row" in the supervisor, so rows start at 1.)
    version     bigint NOT NULL DEFAULT 1,
    updated_at  timestamptz NOT NULL
);

CREATE INDEX IF NOT EXISTS adcp_webhook_breakers_retry_idx
    ON adcp_webhook_breakers (retry_at) WHERE state = 'open';

-- Per-key sequence counters: numbers are contiguous from 1.
CREATE TABLE IF NOT EXISTS adcp_webhook_sequences (
    sequence_key text PRIMARY KEY,
    last_value   bigint NOT NULL
);

INSERT INTO adcp_webhook_deliveries_schema_version (version, name) VALUES (1, 'baseline')
ON CONFLICT (version) DO NOTHING;

-- Migration 2: failed deliveries by endpoint (or tenant) key, newest
-- first, for operators' lists and bulk redelivery ("everything that failed
-- for buyer X during the outage"). Partial: only failed rows are indexed,
-- so accepting and delivering pay nothing for it.
CREATE INDEX IF NOT EXISTS adcp_webhook_deliveries_failed_key_idx
    ON adcp_webhook_deliveries (breaker_key, id) WHERE state = 'failed';

INSERT INTO adcp_webhook_deliveries_schema_version (version, name) VALUES (2, 'failed_by_endpoint')
ON CONFLICT (version) DO NOTHING;

-- Migration 3: the Observer's carrier (a W3C traceparent, say), stored
-- with each delivery so that its attempts, in any process, can link to
-- its acceptance. Adding a column without a default changes only the
-- catalog.
ALTER TABLE adcp_webhook_deliveries ADD COLUMN IF NOT EXISTS trace_carrier text;

INSERT INTO adcp_webhook_deliveries_schema_version (version, name) VALUES (3, 'trace_carrier')
ON CONFLICT (version) DO NOTHING;

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

-- Migration 6: multi-tenant signing (Routing.Tenant). The tenant whose
-- current signing key signs each attempt; the key itself is never stored.
ALTER TABLE adcp_webhook_deliveries ADD COLUMN IF NOT EXISTS tenant text;

INSERT INTO adcp_webhook_deliveries_schema_version (version, name) VALUES (6, 'tenant')
ON CONFLICT (version) DO NOTHING;

-- Migration 7: encryption at rest (PostgresConfig.Encryption). A row whose
-- sealed_with is set holds its body, auth_credentials, payload_sha256 and
-- (in sealed_headers, with headers NULL) its headers as AES-256-GCM
-- ciphertexts under that key of the ring, each bound to its column and to
-- the delivery's idempotency key and URL.
ALTER TABLE adcp_webhook_deliveries ADD COLUMN IF NOT EXISTS sealed_with text,
    ADD COLUMN IF NOT EXISTS sealed_headers bytea;

INSERT INTO adcp_webhook_deliveries_schema_version (version, name) VALUES (7, 'sealed')
ON CONFLICT (version) DO NOTHING;
