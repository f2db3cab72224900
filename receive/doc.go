// Package receive is the buyer's side of AdCP webhooks: a receiving
// endpoint that checks an inbound webhook was signed by the seller, for
// the URL it arrived at, with the body it carries, and not replayed, and
// that runs the buyer's handler once per delivery.
//
// It depends only on the standard library (and this module's internal
// helpers), so a buyer's binary does not link the seller's delivery engine
// or its Postgres driver (the root package github.com/adcpkit/webhook,
// which imports this one for the signature profile it shares with the
// buyer). The shared stores in Postgres are in receive/pgstore.
//
// # Quick start
//
//	keys, err := receive.NewKeyDiscovery(receive.DiscoveryConfig{Agent: sellerAgentURL, BrandJSONURL: sellerBrandJSON})
//	verifier, err := receive.NewVerifier(receive.VerifierConfig{Discovery: keys, Nonces: nonces})
//	handler, err := receive.NewHandler(receive.HandlerConfig{Verifier: verifier, Dedup: dedup}, http.HandlerFunc(onWebhook))
//
// nonces and dedup are a [NonceStore] and a [DedupStore] every pod shares
// (receive/pgstore's); [MemoryNonceStore] and [MemoryDedupStore] serve
// development and tests.
//
// # The handler
//
// A [Handler] answers 413 and 415 before any signature work, verifies by
// the route's registered mode (RFC 9421, or legacy HMAC or Bearer; the
// other scheme is [CodeModeMismatch]), answers activation challenges,
// reads idempotency_key, and makes one request the owner of each
// (sender, key) before the buyer's handler runs: 409 for a changed
// payload, 200 for a completed duplicate, 503 while one is in progress,
// 429 over the sender's cap. The buyer's handler finds the verified
// webhook with [WebhookFrom]; its 2xx is recorded before it is sent, and
// any other answer releases the key for the seller's retry.
//
// # Signatures
//
// A [Verifier] implements the AdCP RFC 9421 webhook profile
// ([SignatureLabel], [SignatureTag], [AlgEd25519] or [AlgECDSAP256], at most
// [SignatureWindow]) and runs the spec's verifier checklist in order. A
// webhook that fails is a [*VerifyError] wrapping [ErrSignatureRejected];
// its Code is one of the Code constants, such as [CodeSignatureInvalid],
// for the WWW-Authenticate header. [Verifier.VerifyRequest] takes an
// *http.Request; behind a proxy that terminates TLS, set
// [VerifierConfig.ExternalURL] so it checks the URL the seller signed.
// [Verifier.Verify] takes the parts.
//
// # Keys
//
// A [KeyDiscovery] fetches the seller's keys from its brand.json agents[]
// entry or a pinned jwks_uri, through an SSRF-guarded client, caches them,
// refetches them on an unknown kid (at most every [RefetchCooldown]) and
// polls the seller's signed revocation list. [ParseJWKS] and
// [NewVerifyingKey] make static keys instead; a [RevocationList] you
// refresh yourself then retires them.
//
// # Replay and admission pressure
//
// Every accepted signature's nonce is recorded in a [NonceStore] until the
// signature expires, and a second use is rejected with [CodeReplayed]. A
// replay check does not replace de-duplication by idempotency key: a
// seller retrying a webhook signs it afresh. An [AdmissionMonitor] alarms
// when more new keyids are admitted than the spec's four thresholds allow.
//
// # Legacy authentication
//
// Webhooks registered with legacy authentication carry no RFC 9421
// signature; [VerifyLegacyHMAC] and [VerifyLegacyBearer] check them, and a
// Handler with [HandlerConfig.Legacy] does so for a route.
package receive
