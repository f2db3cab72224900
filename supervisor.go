package webhook

import (
	"context"
	"encoding/json"
	"time"

	"github.com/adcpkit/webhook/receive"
)

// Supervisor accepts webhooks and delivers them: signed, retried with backoff,
// gated per endpoint by a circuit breaker, and audited once per attempt.
//
// Accepting and delivering are separate. SendMCP and SendPrepared validate the
// webhook, freeze its body bytes and idempotency key, and hand it to the
// workers; they never wait for the receiver. RunWorker delivers. Every attempt
// of one delivery sends the identical bytes under the same idempotency key.
//
// Implementations are safe for concurrent use.
type Supervisor interface {
	// SendMCP builds the MCP webhook body once (see [MCPWebhook]) and accepts
	// it for delivery. A nil error means the delivery was accepted; the
	// [Receipt] identifies it. Invalid input returns a [*ValidationError] and
	// accepts nothing.
	SendMCP(ctx context.Context, w MCPWebhook) (Receipt, error)

	// SendPrepared accepts an already-built JSON body, for AdCP webhooks other
	// than the MCP task envelope and for A2A push notifications. It follows
	// the same rules as SendMCP.
	SendPrepared(ctx context.Context, w PreparedWebhook) (Receipt, error)

	// SendMCPBatch and SendPreparedBatch accept many webhooks at once (an
	// event's fan-out to every subscriber, say), all or none: every item
	// is validated before anything is accepted, and any item's refusal is
	// a [*BatchError] naming it. Receipts are in the items' order.
	SendMCPBatch(ctx context.Context, ws []MCPWebhook) ([]Receipt, error)
	SendPreparedBatch(ctx context.Context, ws []PreparedWebhook) ([]Receipt, error)

	// RunWorker delivers accepted webhooks until ctx is done. It then stops
	// starting attempts, lets in-flight attempts finish (bounded), records
	// their results and returns nil. Deliveries not yet attempted stay queued
	// for the next RunWorker.
	RunWorker(ctx context.Context) error

	// DeliveryStateIsDurable reports whether accepted deliveries survive a
	// process restart (the Python SDK's delivery_state_is_durable).
	DeliveryStateIsDurable() bool

	// DeliveryRetryHorizon is how long after its first attempt (or its
	// acceptance, while there has been none) a delivery may still be
	// attempted: what an AdCP 3.2 seller advertises as
	// webhook_signing.delivery_retry_horizon_seconds. It is 24 h to 7 d,
	// or zero when [NoHorizon] turned it off.
	DeliveryRetryHorizon() time.Duration
}

// MCPWebhook is one AdCP MCP webhook: the payload fields of the AdCP
// mcp-webhook-payload schema plus how to route it.
//
// The body is built once at acceptance as compact JSON without HTML escaping,
// with the members in schema order. Empty optional fields are omitted.
type MCPWebhook struct {
	// URL is the buyer's push_notification_config.url. Required; https unless
	// the supervisor allows plain http.
	URL string

	// OperationID is the buyer's push_notification_config.operation_id,
	// echoed verbatim. Required.
	OperationID string
	// TaskID identifies the task. Required.
	TaskID string
	// TaskType is the AdCP task type, one of the TaskType constants or another
	// well-formed snake_case name. Required.
	TaskType TaskType
	// Status is the task status. Required.
	Status Status
	// Result is the task-specific payload: any value that marshals to a JSON
	// object or value. A [json.RawMessage] is checked for validity and then
	// embedded byte for byte, whitespace included. A nil interface or a nil
	// RawMessage omits the member; a typed nil pointer marshals to null.
	Result any
	// Token is push_notification_config.token, echoed verbatim; 16 to 4096
	// characters when set.
	Token string
	// Message is a human-readable summary of the task state.
	Message string
	// ContextID is the session correlation identifier.
	ContextID string
	// NotificationID identifies the logical notification, stable across
	// re-emissions. For a task webhook (no Routing.NotificationType) it
	// defaults to "<TaskID>.terminal" for the terminal statuses completed,
	// failed, canceled and rejected, and is omitted otherwise; for other
	// notification types it is what the caller sets (the spec ties it to
	// each event's own identity, see notification-type.json). Delivery
	// reports (NotificationType scheduled, final, delayed, adjusted or
	// window_update) carry none: setting one is a ValidationError.
	NotificationID string
	// OmitNotificationID leaves notification_id out of the body, default
	// included.
	OmitNotificationID bool
	// WriteSequenceNumber writes the delivery's number in its
	// Routing.SequenceKey stream into Result as sequence_number, the
	// delivery report's field (media-buy-delivery-webhook-result.json):
	// the supervisor draws it at acceptance, so reports of one stream are
	// numbered 1, 2, 3... with no gaps, in the order they are accepted
	// (inside SendMCPTx too). Result must be a JSON object without a
	// sequence_number. [BuildMCPBody] refuses it.
	WriteSequenceNumber bool
	// Protocol is the AdCP protocol. It defaults to the protocol of TaskType
	// (see [ProtocolForTaskType]) and is omitted when that is unknown.
	Protocol Protocol
	// Timestamp is when the notification was generated. Zero means now, by
	// the supervisor's clock. It is written in RFC 3339 UTC with milliseconds.
	Timestamp time.Time
	// IdempotencyKey is the delivery key the receiver de-duplicates on. Empty
	// means a fresh "whk_<uuid4>" from crypto/rand. When set it must match
	// ^[A-Za-z0-9_.:-]{16,255}$.
	IdempotencyKey string

	// Routing: not part of the body.
	Routing
}

// Routing says how a delivery is ordered, isolated and authenticated. None of
// it is part of the body.
type Routing struct {
	// SequenceKey, when set, gives the delivery the next number of a
	// per-key sequence that starts at 1 and has no gaps (see [Receipt]).
	SequenceKey string
	// BreakerKey selects the circuit breaker. Empty means the URL. Sellers
	// whose buyers share one receiver URL pass a tenant-scoped key.
	BreakerKey string
	// NotificationType is copied into every [Attempt] record, such as
	// "scheduled" or "creative.status_changed".
	NotificationType string
	// SubscriberID identifies the registered subscriber the delivery goes
	// to (AdCP's subscriber_id: required for account-level notification
	// configs, optional for per-resource push channels). It is copied
	// into every [Attempt] and activity record, and selects records in
	// [ActivityQuery]. At most 255 bytes of printable text.
	SubscriberID string
	// Tenant names the seller's tenant (the publisher) the delivery is
	// sent for: every attempt is signed with that tenant's current key in
	// the sender's [SigningKeys], so a key rotated while the delivery
	// waits signs its next attempt. Empty means the default key. A tenant
	// the sender has no key for is refused at acceptance
	// ([ErrSigningKeyMissing]); one whose key is gone when an attempt
	// starts fails the delivery with that reason. A delivery with legacy
	// Authentication is not signed and needs no key. Stored with the
	// delivery (the key never is). At most 255 bytes of printable text.
	Tenant string
	// Authentication is the registration's legacy authentication, if any. When
	// set, the sender authenticates with it instead of an RFC 9421 signature.
	Authentication *Authentication
	// Headers are extra request headers sent on every attempt, such as
	// A2A's X-A2A-Notification-Token. They are not signed and never appear
	// in Attempt records or logs. At most 16; names must be HTTP tokens and
	// not ones the sender sets itself (Content-Type, Content-Digest,
	// Content-Length, Signature, Signature-Input, Authorization, Host,
	// User-Agent, Accept-Encoding, X-ADCP-*); values at most 4,096 bytes of
	// printable text.
	Headers map[string]string
}

// PreparedWebhook is a webhook whose JSON body the caller built.
type PreparedWebhook struct {
	// URL is the destination. Required; https unless the supervisor allows
	// plain http.
	URL string
	// Body is the exact JSON to send on every attempt. It must be valid JSON
	// of at most [MaxBodyBytes]. The supervisor keeps its own copy.
	Body []byte
	// IdempotencyKey identifies the delivery to the receiver. Required; it
	// must match ^[A-Za-z0-9_.:-]{16,255}$ and, when Body is an object with
	// an idempotency_key, be that key. [NewIdempotencyKey] makes one.
	IdempotencyKey string
	// TaskType and TaskID are copied into [Attempt] records. Optional.
	TaskType TaskType
	TaskID   string

	Routing
}

// AuthScheme is a legacy push-notification authentication scheme.
type AuthScheme string

// Legacy authentication schemes from push_notification_config.authentication.
const (
	// AuthBearer sends "Authorization: Bearer <credentials>".
	AuthBearer AuthScheme = "Bearer"
	// AuthHMACSHA256 sends X-ADCP-Signature and X-ADCP-Timestamp headers
	// computed with the credentials as the HMAC-SHA256 key.
	AuthHMACSHA256 AuthScheme = "HMAC-SHA256"
)

// MinCredentialsLength is the shortest accepted legacy credential.
const MinCredentialsLength = receive.MinCredentialsLength

// Authentication is a registration's legacy authentication. The credentials
// are a secret: the package never logs them or puts them in errors or
// [Attempt] records.
type Authentication struct {
	// Scheme is AuthBearer or AuthHMACSHA256.
	Scheme AuthScheme
	// Credentials is the shared secret: [MinCredentialsLength] to
	// [MaxCredentialsLength] visible ASCII characters (no spaces or
	// controls), at least 8 of them different.
	Credentials string
}

// String hides the credentials.
func (a Authentication) String() string {
	return "Authentication{Scheme: " + string(a.Scheme) + ", Credentials: <redacted>}"
}

// GoString hides the credentials from %#v.
func (a Authentication) GoString() string { return a.String() }

// MarshalJSON hides the credentials, so a logged or marshalled webhook cannot
// leak them.
func (a Authentication) MarshalJSON() ([]byte, error) {
	return json.Marshal(map[string]string{"scheme": string(a.Scheme), "credentials": "<redacted>"})
}

// Receipt identifies an accepted delivery.
type Receipt struct {
	// ID identifies the delivery within its supervisor. (MemorySupervisor
	// IDs are a random per-supervisor prefix and a counter.)
	ID string
	// IdempotencyKey is the key every attempt carries.
	IdempotencyKey string
	// Sequence is the delivery's number in its SequenceKey's sequence, or 0
	// when the webhook had no SequenceKey.
	Sequence int64
	// ReemissionOf is set by a Redeliver that re-emitted a delivery past
	// its retry horizon: the ID of the original, which this new delivery
	// sends again under a fresh IdempotencyKey. Empty otherwise.
	ReemissionOf string
}

// DeliveryState is where a delivery is in its life.
type DeliveryState string

// Delivery states.
const (
	// StatePending: waiting for its first or next attempt.
	StatePending DeliveryState = "pending"
	// StateRunning: an attempt is in flight.
	StateRunning DeliveryState = "running"
	// StateDelivered: the receiver answered 2xx. Final.
	StateDelivered DeliveryState = "delivered"
	// StateFailed: attempts ran out, the horizon passed, or the receiver
	// refused it permanently. Final; the delivery keeps its bytes and last
	// error.
	StateFailed DeliveryState = "failed"
)

// Final reports whether s is delivered or failed.
func (s DeliveryState) Final() bool { return s == StateDelivered || s == StateFailed }

// Delivery is a snapshot of one accepted delivery.
type Delivery struct {
	// ID is the Receipt ID.
	ID string
	// URL is the destination.
	URL string
	// IdempotencyKey is the key every attempt carries.
	IdempotencyKey string
	// Body is the exact bytes every attempt sends (a copy).
	Body []byte
	// SequenceKey and Sequence are the delivery's sequence, if any.
	SequenceKey string
	Sequence    int64
	// BreakerKey selects the breaker: Routing.BreakerKey, else the URL.
	BreakerKey string
	// TaskType and TaskID identify the task, when known.
	TaskType TaskType
	TaskID   string
	// NotificationType, SubscriberID and Tenant are the delivery's
	// Routing's.
	NotificationType string
	SubscriberID     string
	Tenant           string
	// State is where the delivery is.
	State DeliveryState
	// Attempts is how many attempts have been made.
	Attempts int
	// LastError describes the last failed attempt; empty when there was none.
	LastError string
	// LastStatus is the last attempt's HTTP status, or 0.
	LastStatus int
	// AcceptedAt is when SendMCP or SendPrepared accepted it.
	AcceptedAt time.Time
	// FirstAttemptAt is when its first attempt started; zero before any.
	// The retry horizon counts from it, and a redelivery does not move it.
	FirstAttemptAt time.Time
	// NextAttemptAt is when a pending delivery is due.
	NextAttemptAt time.Time
	// FinishedAt is when a final state was reached.
	FinishedAt time.Time
	// ReemissionOf is the ID of the delivery this one re-emits (see
	// Redeliver), or "".
	ReemissionOf string
	// ReemittedAs is the ID of the delivery that re-emitted this one, or
	// "".
	ReemittedAs string
	// EncryptionKey is the ID of the key ([PostgresConfig.Encryption])
	// that encrypts what is stored of the delivery's secrets, or "" when
	// they are stored in plain text. When this process cannot decrypt
	// them, Body is nil.
	EncryptionKey string
}
