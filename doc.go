// Package webhook delivers AdCP webhooks reliably: every accepted webhook
// reaches the buyer's endpoint or ends as a recorded failure, with the same
// bytes and idempotency key on every attempt, retries with backoff, a circuit
// breaker per endpoint, and one audit record per attempt.
//
// It is the Go port of the Python AdCP SDK's WebhookDeliverySupervisor seam:
// the same defaults and audit fields, without that SDK's flaws (a new
// idempotency key after a failed first attempt, a breaker checked only at
// enqueue).
//
// # Quick start
//
//	key, err := webhook.ParseJWKSigningKey(privateJWK) // check every err
//	signer, err := webhook.NewRFC9421Signer(webhook.SignerConfig{Key: key})
//	sender, err := webhook.NewHTTPSender(webhook.HTTPSenderConfig{Signer: signer})
//	sup, err := webhook.NewMemorySupervisor(sender, webhook.MemoryConfig{})
//	go sup.RunWorker(ctx) // stops, draining in-flight attempts, when ctx ends
//
//	receipt, err := sup.SendMCP(ctx, webhook.MCPWebhook{
//		URL:         cfg.URL,         // push_notification_config.url
//		OperationID: cfg.OperationID, // push_notification_config.operation_id
//		TaskID:      "task_456",
//		TaskType:    webhook.TaskCreateMediaBuy,
//		Status:      webhook.StatusCompleted,
//		Result:      result,
//	})
//
// SendMCP returns as soon as the webhook is accepted; RunWorker delivers it.
//
// # Accept, then deliver
//
// [Supervisor.SendMCP] validates the webhook (a [*ValidationError] names the
// bad field, and nothing is queued), builds its body once with
// [BuildMCPBody], allocates a sequence number when [Routing.SequenceKey] is
// set, and queues it. [Supervisor.SendPrepared] does the same for a body the
// caller built, such as an A2A push notification. [Supervisor.RunWorker]
// delivers until its context ends, then lets in-flight attempts finish.
//
// # Retries and the circuit breaker
//
// [RetryPolicy] decides what an answer means ([DefaultClassifier]) and how
// long to wait: by default 3 attempts, 1 s doubling to at most 30 s, with
// jitter, and Retry-After honoured as a floor. Before every attempt the worker
// asks the endpoint's breaker ([BreakerPolicy]): 5 consecutive failures open
// it for 60 s, then half-open probes decide whether it closes. While it is
// open, deliveries wait without being charged an attempt ([OpenDefer]), or
// new webhooks are refused with [ErrCircuitOpen] ([OpenDrop]).
//
// # Audit
//
// Every attempt produces an [Attempt] record, handed to the configured
// [LogSink] in attempt order. A sink that fails, blocks or panics is logged
// and ignored after [RetryPolicy.SinkTimeout].
//
// # Supervisors
//
// [MemorySupervisor] keeps its queue in memory: fast, simple, and lost on a
// crash. [PostgresSupervisor] keeps it in Postgres (pgx): acceptance is a
// commit, any number of workers in any number of processes share the queue
// under leases, the breaker lives in a table every worker consults, failed
// deliveries are kept for [PostgresSupervisor.Redeliver], and
// [PostgresSupervisor.SendMCPTx] enqueues inside the caller's transaction.
// Both implement [Supervisor] and pass the same behavioural tests.
//
// # Sending
//
// [HTTPSender] POSTs the exact bytes with a timeout, never follows redirects,
// ignores proxy environment variables, caps what it reads, and refuses to
// dial internal addresses ([ErrBlockedDestination]). With a [Signer] such as
// [RFC9421Signer] it signs every attempt per the AdCP RFC 9421 webhook
// profile; webhooks whose registration carries legacy [Authentication] are
// sent with Bearer or HMAC-SHA256 headers instead. Any [Sender] can be
// plugged in.
//
// # Receiving
//
// Buyers verify inbound webhooks with the separate package
// [github.com/adcpkit/webhook/receive]: its [receive.Verifier] follows the
// AdCP webhook verifier checklist and fails with a [*receive.VerifyError]
// carrying the spec's error code, and [receive.VerifyLegacyHMAC] checks the
// legacy scheme. It does not import this package, so a buyer's binary does
// not link pgx. This package imports it for what both sides share: the
// signature profile's constants, [receive.VerifyingKey] (see
// [SigningKey.VerifyingKey]) and [receive.LegacyHMAC]. The webhooktest
// package provides a verifying, fault-injecting receiver for tests.
//
// # Design
//
// docs/design.md in the repository maps the internals: the delivery state
// machine, the claim → lease → fence → complete protocol of the Postgres
// supervisor, how the endpoint gate (the one circuit-breaker state
// machine) is shared across pods, and the goroutines of RunWorker.
package webhook
