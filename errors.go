package webhook

import (
	"errors"
	"fmt"
)

// Sentinel errors. Match them with [errors.Is]; the errors the package returns
// wrap them with detail (which field, which delivery) that is meant for people,
// not for string comparison.
var (
	// ErrInvalidWebhook reports a webhook that failed validation. It is always
	// wrapped by a [*ValidationError] naming the field. Nothing was queued or sent.
	ErrInvalidWebhook = errors.New("webhook: invalid webhook")

	// ErrInvalidConfig reports a bad supervisor, policy or sender configuration.
	// It is always wrapped by a [*ConfigError] naming the field.
	ErrInvalidConfig = errors.New("webhook: invalid configuration")

	// ErrCircuitOpen is returned by SendMCP and SendPrepared when the
	// destination's circuit breaker is open and [BreakerPolicy.OpenAction] is
	// [OpenDrop]. A circuit_open [Attempt] was recorded; nothing was queued and
	// no sequence number was allocated.
	ErrCircuitOpen = errors.New("webhook: circuit breaker open")

	// ErrQueueFull is returned by [MemorySupervisor] when it already holds
	// [MemoryConfig.MaxQueued] unfinished deliveries. Nothing was queued.
	ErrQueueFull = errors.New("webhook: delivery queue full")

	// ErrBodyTooLarge reports a webhook body over [MaxBodyBytes].
	ErrBodyTooLarge = errors.New("webhook: body too large")

	// ErrBlockedDestination reports a destination that resolves to an
	// address HTTPSender refuses to dial (private, loopback, link-local,
	// cloud metadata, multicast, reserved). It is a permanent failure.
	ErrBlockedDestination = errors.New("webhook: destination address is blocked")

	// ErrResponseHeadersTooLarge: the receiver answered with more header
	// bytes or fields than the sender reads ([MaxResponseHeaderBytes],
	// [MaxResponseHeaderFields]). The attempt fails as a transport failure.
	ErrResponseHeadersTooLarge = errors.New("webhook: response headers too large")

	// ErrSigning reports that a request could not be signed (a key service
	// down, say). Nothing was sent; the attempt is retried and does not
	// count against the destination's breaker.
	ErrSigning = errors.New("webhook: signing failed")

	// ErrNotFound reports an unknown delivery ID.
	ErrNotFound = errors.New("webhook: delivery not found")

	// ErrNotFailed is returned by Redeliver for a delivery that is
	// pending, running or delivered, or that was already re-emitted (the
	// error names the re-emission; redeliver that one instead).
	ErrNotFailed = errors.New("webhook: delivery has not failed")

	// ErrIdempotencyConflict is returned by SendMCP and SendPrepared (in
	// a [*ValidationError] for IdempotencyKey) for a key already bound to
	// a different payload or URL: AdCP 3.2 binds a key to the RFC 8785
	// canonical form of its payload for the retry horizon, and a receiver
	// answers 409 to a changed one. Use a fresh key for a changed payload.
	// Nothing was queued.
	ErrIdempotencyConflict = errors.New("webhook: idempotency key bound to another payload")

	// ErrReemitPrepared is returned by Redeliver for a delivery whose
	// retry horizon has passed and whose body the caller built
	// (SendPrepared): past the horizon its idempotency_key must never be
	// sent again (AdCP 3.2), and the library cannot rebuild a body it did
	// not build. Submit the event again as a new body with a fresh
	// idempotency_key and the same notification_id. Nothing was changed.
	ErrReemitPrepared = errors.New("webhook: past its retry horizon, a prepared body cannot be re-emitted by the library")

	// ErrSchemaMissing is returned by the Postgres supervisor when its
	// tables (or columns this version needs) do not exist: the error says
	// to run [PostgresSupervisor.CreateSchema].
	ErrSchemaMissing = errors.New("webhook: the supervisor's tables are missing or out of date")

	// ErrSchemaNewer is returned by CreateSchema and RunWorker when the
	// database's schema is newer than this code's [SchemaVersion]: a newer
	// release migrated it, and this binary must be upgraded.
	ErrSchemaNewer = errors.New("webhook: the database schema is newer than this code")

	// ErrNilSender is returned by constructors given a typed nil
	// [Sender], and by RunWorker on a supervisor made without one (which
	// accepts and inspects deliveries, for an operator's tools, but cannot
	// send them).
	ErrNilSender = errors.New("webhook: nil sender")

	// ErrNoResponse is what a Classifier receives when a [Sender] returned
	// neither a response nor an error, which breaks the Sender contract.
	ErrNoResponse = errors.New("webhook: sender returned no response and no error")

	// ErrInvalidKey reports a signing key that cannot be used for AdCP webhook
	// signatures; the wrapping error says why.
	ErrInvalidKey = errors.New("webhook: invalid signing key")

	// ErrOutcomeUnknown is returned by [PostgresSupervisor.SendMCP] and
	// SendPrepared when the connection failed after the enqueue statement
	// was sent: the delivery may have been committed (and will then be
	// delivered) or not. Sending the webhook again with the same
	// IdempotencyKey is safe for the buyer, who de-duplicates by key, but
	// may make a second delivery (and allocate a second sequence number).
	// To know the outcome, enqueue with SendMCPTx inside your own
	// transaction: the delivery then commits exactly when it does.
	ErrOutcomeUnknown = errors.New("webhook: outcome unknown: the connection failed after the delivery was sent to the database")
)

// Internal sentinels of the Postgres supervisor's completion path.
var (
	// errLeaseLost reports a statement fenced off by its lease token:
	// another worker holds the delivery now.
	errLeaseLost = errors.New("lease lost")

	// errGateMoved reports a completion computed from a gate row that has
	// changed since: it must be decided again from the row as it is now.
	errGateMoved = errors.New("gate moved")
)

// ValidationError describes one invalid field of a webhook. It unwraps to
// [ErrInvalidWebhook] (and to [ErrBodyTooLarge] when the body is the problem).
type ValidationError struct {
	// Field is the Go field name, such as "URL" or "Authentication.Credentials".
	Field string
	// Reason says what is wrong and how to fix it. It never contains secrets.
	Reason string

	sentinel error
}

func (e *ValidationError) Error() string {
	return fmt.Sprintf("webhook: invalid %s: %s", e.Field, e.Reason)
}

// Unwrap returns the sentinels this error matches.
func (e *ValidationError) Unwrap() []error {
	if e.sentinel != nil {
		return []error{ErrInvalidWebhook, e.sentinel}
	}
	return []error{ErrInvalidWebhook}
}

func invalid(field, format string, args ...any) *ValidationError {
	return &ValidationError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// ConfigError describes one invalid configuration field. It unwraps to
// [ErrInvalidConfig].
type ConfigError struct {
	// Field is the configuration field, such as "RetryPolicy.MaxAttempts".
	Field string
	// Reason says what is wrong and how to fix it.
	Reason string
}

func (e *ConfigError) Error() string {
	return fmt.Sprintf("webhook: invalid %s: %s", e.Field, e.Reason)
}

// Unwrap returns [ErrInvalidConfig].
func (e *ConfigError) Unwrap() error { return ErrInvalidConfig }

func badConfig(field, format string, args ...any) *ConfigError {
	return &ConfigError{Field: field, Reason: fmt.Sprintf(format, args...)}
}
