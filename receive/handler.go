package receive

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"time"

	"github.com/adcpkit/webhook/internal/ident"
	"github.com/adcpkit/webhook/internal/jcs"
	"github.com/adcpkit/webhook/internal/recvhook"
	"github.com/adcpkit/webhook/internal/strictjson"
)

func init() {
	recvhook.New = func(cfg any, next http.Handler, hooks recvhook.Hooks) (http.Handler, error) {
		return newHandler(cfg.(HandlerConfig), next, hooks)
	}
}

// DefaultMaxBody is the largest webhook body a [Handler] reads by default:
// the 1 MB AdCP 3.2 recommends receivers enforce (1 MiB here). Larger
// bodies are answered 413 before any signature work.
const DefaultMaxBody = 1 << 20

// DefaultLease is how long a [Handler]'s claim on a delivery lasts by
// default: the most its handler may take before another pod may take the
// delivery over (the sender's retry then runs it again).
const DefaultLease = 2 * time.Minute

// MaxResponseBytes bounds what the buyer's handler may write in answer to
// a webhook: the [Handler] holds the response until the delivery is
// recorded as processed.
const MaxResponseBytes = 64 << 10

// Legacy authentication schemes a buyer may register (deprecated in AdCP
// 3.x, removed in 4.0).
const (
	SchemeHMAC   = "HMAC-SHA256"
	SchemeBearer = "Bearer"
)

// LegacyAuth is the legacy authentication a buyer registered for a webhook
// route (push_notification_config.authentication): its presence selects
// legacy verification for every webhook to that route, and an RFC 9421
// signed webhook is then refused with [CodeModeMismatch].
type LegacyAuth struct {
	// Scheme is [SchemeHMAC] or [SchemeBearer].
	Scheme string
	// Credentials is the secret or token registered with the seller, at
	// least [MinCredentialsLength] characters.
	Credentials string
	// Agent is the seller agent's URL the credentials were registered
	// with: the sender identity that scopes de-duplication. Give the same
	// URL as the seller's [VerifierConfig.Agent], so that during a
	// migration to RFC 9421 a delivery seen under both schemes dedupes to
	// one keyspace.
	Agent string
}

// HandlerConfig configures [NewHandler]. A handler serves one webhook
// route: one seller and one authentication mode, as the buyer registered
// it. Mount one per registration; they may share a DedupStore and a
// NonceStore.
type HandlerConfig struct {
	// Verifier checks RFC 9421 signatures, with [VerifierConfig.Agent]
	// set. Required unless Legacy is set; on a legacy route it checks
	// only activation challenges, which sellers always sign with RFC 9421.
	Verifier *Verifier
	// Legacy, when set, selects legacy authentication for the route.
	Legacy *LegacyAuth
	// Dedup binds each (sender, idempotency_key) to its payload and elects
	// the delivery's single owner. Required: receive/pgstore's DedupStore
	// in production (every pod must share it), MemoryDedupStore in tests.
	Dedup DedupStore
	// Registration, when set, is what an activation challenge must match
	// ([AnswerChallenge]); a matching, RFC 9421-verified challenge is
	// answered here and never reaches next. When nil, challenges are
	// answered 403.
	Registration *Registration
	// Lease is how long a claim on a delivery lasts, from the claim;
	// next's context ends a little before it does (a tenth of it, at most
	// 5 s, is kept to record the outcome). Defaults to DefaultLease.
	Lease time.Duration
	// MaxBody bounds the body. Defaults to DefaultMaxBody.
	MaxBody int64
	// Logger receives rejections (Warn: mode mismatches and rate abuse
	// are alarms) and store failures (Error). Defaults to slog.Default().
	Logger *slog.Logger
	// Now is the clock for de-duplication and legacy HMAC timestamps.
	// Defaults to time.Now.
	Now func() time.Time
}

// Webhook is what a [Handler] passes to the buyer's handler, through the
// request's context ([WebhookFrom]): an authenticated webhook whose
// delivery this request owns.
type Webhook struct {
	// Sender is the authenticated sender identity: the seller agent URL.
	Sender string
	// IdempotencyKey is the payload's idempotency_key.
	IdempotencyKey string
	// Body is the body as received; r.Body reads the same bytes.
	Body []byte
	// Scheme is "rfc9421", [SchemeHMAC] or [SchemeBearer].
	Scheme string
	// Signature is the verified RFC 9421 signature; nil on a legacy route.
	Signature *VerifiedSignature
}

type webhookKey struct{}

// WebhookFrom returns the webhook a [Handler] verified and claimed for
// the request whose context ctx is.
func WebhookFrom(ctx context.Context) (*Webhook, bool) {
	wh, ok := ctx.Value(webhookKey{}).(*Webhook)
	return wh, ok
}

// Handler is the AdCP 3.2 receiving endpoint around a buyer's own handler.
// For each POST it, in order:
//
//   - answers 413 to a body over MaxBody and 415 to a Content-Type other
//     than application/json, before any signature work;
//   - verifies the route's mode (RFC 9421, or the registered legacy
//     scheme), answering 401 with WWW-Authenticate: Signature
//     error="<code>" (one of the Code constants, such as
//     [CodeModeMismatch]); strict JSON (duplicate member names are
//     [CodeBodyMalformed]);
//   - answers an activation challenge, when a Registration is configured;
//   - reads idempotency_key (400 if it is missing or not 16 to 255
//     characters of [A-Za-z0-9_.:-]) and claims the delivery for the
//     (sender, key) with the SHA-256 of the body's RFC 8785 canonical form:
//     409 for a changed payload, 200 for a completed duplicate, 503 while
//     an identical delivery is in progress, 429 when the sender is over
//     its cap;
//   - runs next once, as the delivery's single owner. A 2xx answer from
//     next is recorded as processed before it is sent (503 if that record
//     fails, so that the sender retries); any other answer, or a panic,
//     releases the claim, so the sender's retry runs next again.
//
// next reads the body from r.Body and the verified webhook from
// [WebhookFrom]. Its context outlives the sender's connection (a sender
// that gives up does not cut the processing short) and ends a little
// before the claim's lease (see HandlerConfig.Lease). Its response is held
// until it returns: it cannot stream or hijack, and a write past
// MaxResponseBytes fails.
type Handler struct {
	verifier *Verifier
	legacy   *LegacyAuth
	dedup    DedupStore
	reg      *Registration
	lease    time.Duration
	maxBody  int64
	log      *slog.Logger
	now      func() time.Time
	next     http.Handler
	hooks    recvhook.Hooks
}

// NewHandler returns a Handler that passes verified, de-duplicated
// webhooks to next. Bad configuration is a [*ConfigError] naming the field.
func NewHandler(cfg HandlerConfig, next http.Handler) (*Handler, error) {
	return newHandler(cfg, next, recvhook.Hooks{})
}

func newHandler(cfg HandlerConfig, next http.Handler, hooks recvhook.Hooks) (*Handler, error) {
	h := &Handler{verifier: cfg.Verifier, legacy: cfg.Legacy, dedup: cfg.Dedup, reg: cfg.Registration,
		lease: cfg.Lease, maxBody: cfg.MaxBody, log: cfg.Logger, now: cfg.Now, next: next, hooks: hooks}
	anonymous := hooks.Unverified || hooks.Sender != ""
	switch {
	case next == nil:
		return nil, badConfig("NewHandler next", "is nil; pass the handler that acts on verified webhooks")
	case cfg.Dedup == nil:
		return nil, badConfig("HandlerConfig.Dedup", "is nil; use receive/pgstore's DedupStore, shared by every pod (MemoryDedupStore only in tests)")
	case cfg.Legacy == nil && cfg.Verifier == nil && !hooks.Unverified:
		return nil, badConfig("HandlerConfig.Verifier", "is nil; set it to verify RFC 9421 webhooks, or set Legacy for a route registered with legacy authentication")
	case cfg.Legacy == nil && cfg.Verifier != nil && cfg.Verifier.agent == "" && !anonymous:
		return nil, badConfig("VerifierConfig.Agent", "is empty; set it to the seller agent's URL, the sender identity that scopes de-duplication")
	case cfg.Lease < 0:
		return nil, badConfig("HandlerConfig.Lease", "is %v; use a positive duration, or zero for %v", cfg.Lease, DefaultLease)
	case cfg.MaxBody < 0:
		return nil, badConfig("HandlerConfig.MaxBody", "is %d; use a positive size, or zero for %d", cfg.MaxBody, DefaultMaxBody)
	}
	if l := cfg.Legacy; l != nil {
		switch {
		case cfg.Registration != nil && cfg.Verifier == nil && !hooks.Unverified:
			return nil, badConfig("HandlerConfig.Verifier", "is nil on a legacy route with a Registration; activation challenges are always RFC 9421 signed, so set the seller's Verifier")
		case l.Scheme != SchemeHMAC && l.Scheme != SchemeBearer:
			return nil, badConfig("LegacyAuth.Scheme", "is %q; use %q or %q", l.Scheme, SchemeHMAC, SchemeBearer)
		case len([]rune(l.Credentials)) < MinCredentialsLength:
			return nil, badConfig("LegacyAuth.Credentials", "have %d characters; pass the credentials registered with the seller, which have at least %d", len([]rune(l.Credentials)), MinCredentialsLength)
		case l.Agent == "":
			return nil, badConfig("LegacyAuth.Agent", "is empty; set it to the seller agent's URL, the sender identity that scopes de-duplication")
		}
	}
	if h.lease == 0 {
		h.lease = DefaultLease
	}
	if h.maxBody == 0 {
		h.maxBody = DefaultMaxBody
	}
	if h.log == nil {
		h.log = slog.Default()
	}
	if h.now == nil {
		h.now = time.Now
	}
	return h, nil
}

// ServeHTTP implements [http.Handler].
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "webhooks are POSTed", http.StatusMethodNotAllowed)
		return
	}
	if r.ContentLength > h.maxBody {
		h.tooLarge(w, r)
		return
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		http.Error(w, "Content-Type must be application/json", http.StatusUnsupportedMediaType)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, h.maxBody+1))
	switch {
	case err != nil:
		http.Error(w, "the body could not be read", http.StatusBadRequest)
		return
	case int64(len(body)) > h.maxBody:
		h.tooLarge(w, r)
		return
	}

	wh, err := h.authenticate(r, body)
	if err != nil {
		if h.hooks.Refused != nil {
			h.hooks.Refused(r, err)
		}
		h.refuse(w, r, err)
		return
	}
	doc := members(body) // one parse for the type and the key
	if isChallenge(doc) {
		h.challenge(w, r, body, wh)
		return
	}

	key, err := idempotencyKey(doc)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	wh.IdempotencyKey = key
	fp, err := jcs.Sum256(body)
	if err != nil { // not reached: the body was checked as strict JSON
		http.Error(w, "the body cannot be canonicalised", http.StatusBadRequest)
		return
	}
	ctx := r.Context()
	claimedAt := time.Now() // the lease runs from here, in the store and for next
	claim, err := h.dedup.Claim(ctx, wh.Sender, key, fp, h.now(), h.lease)
	if err != nil {
		h.log.LogAttrs(ctx, slog.LevelError, "receive: the dedup store failed to claim a webhook; answering 503 so the sender retries",
			slog.String("sender", wh.Sender), slog.String("idempotency_key", key), slog.Any("error", err))
		http.Error(w, "try again later", http.StatusServiceUnavailable)
		return
	}
	switch claim.Verdict {
	case DedupCompleted:
		w.WriteHeader(http.StatusOK)
	case DedupInProgress:
		w.Header().Set("Retry-After", "5")
		http.Error(w, "an identical delivery is being processed", http.StatusServiceUnavailable)
	case DedupConflict:
		h.log.LogAttrs(ctx, slog.LevelWarn, "receive: idempotency_key reused with a different payload; answered 409, the first payload stands",
			slog.String("sender", wh.Sender), slog.String("idempotency_key", key))
		http.Error(w, "idempotency_key is bound to a different payload", http.StatusConflict)
	case DedupOverCap:
		h.log.LogAttrs(ctx, slog.LevelWarn, "receive: the sender holds as many idempotency keys as the dedup store allows; answered 429",
			slog.String("sender", wh.Sender))
		http.Error(w, "too many deliveries from this sender", http.StatusTooManyRequests)
	case DedupFirst:
		wh.Body = body
		h.own(w, r, wh, claim, claimedAt)
	default:
		http.Error(w, "try again later", http.StatusServiceUnavailable)
	}
}

// authenticate verifies r by the route's mode and returns the webhook's
// sender and scheme.
func (h *Handler) authenticate(r *http.Request, body []byte) (*Webhook, error) {
	l := h.legacy
	signed := r.Header.Get("Signature-Input") != "" || r.Header.Get("Signature") != ""
	// Activation challenges are RFC 9421 signed whatever the route's
	// delivery mode; they never reach next.
	if h.verifier != nil && (l == nil || signed && IsChallenge(body)) {
		sig, err := h.verifier.VerifyRequest(r, body)
		if err != nil {
			return nil, err
		}
		sender := sig.Agent
		if sender == "" {
			sender = h.hooks.Sender
		}
		return &Webhook{Sender: sender, Scheme: "rfc9421", Signature: &sig}, nil
	}
	if l == nil || h.verifier == nil && h.hooks.Unverified && IsChallenge(body) { // unverified, for webhooktest
		if err := strictjson.Check(body); err != nil {
			return nil, reject(CodeBodyMalformed, 14, "the body (%d bytes) is %v", len(body), err)
		}
		return &Webhook{Sender: h.hooks.Sender, Scheme: "none"}, nil
	}
	var err error
	if l.Scheme == SchemeHMAC {
		err = VerifyLegacyHMAC(r.Header, body, l.Credentials, h.now())
	} else {
		err = VerifyLegacyBearer(r.Header, body, l.Credentials)
	}
	if err != nil {
		return nil, err
	}
	return &Webhook{Sender: l.Agent, Scheme: l.Scheme}, nil
}

// refuse answers a webhook that failed authentication: 401 with the
// spec's code, or 503 when a store could not answer.
func (h *Handler) refuse(w http.ResponseWriter, r *http.Request, err error) {
	var ve *VerifyError
	if !errors.As(err, &ve) {
		h.log.LogAttrs(r.Context(), slog.LevelError, "receive: verification could not complete; answering 503 so the sender retries",
			slog.String("path", r.URL.Path), slog.Any("error", err))
		http.Error(w, "try again later", http.StatusServiceUnavailable)
		return
	}
	level := slog.LevelInfo
	if ve.Code == CodeModeMismatch || ve.Code == CodeRateAbuse || ve.Code == CodeKeyRevoked || ve.Code == CodeRevocationStale {
		level = slog.LevelWarn // alarms: a downgrade attempt, a compromised or runaway key
	}
	h.log.LogAttrs(r.Context(), level, "receive: webhook refused",
		slog.String("code", ve.Code), slog.Int("step", ve.Step), slog.String("reason", ve.Reason), slog.String("path", r.URL.Path))
	w.Header().Set("WWW-Authenticate", `Signature error="`+ve.Code+`"`)
	http.Error(w, ve.Code, http.StatusUnauthorized)
}

func (h *Handler) tooLarge(w http.ResponseWriter, r *http.Request) {
	h.log.LogAttrs(r.Context(), slog.LevelInfo, "receive: webhook body over the limit; answered 413",
		slog.Int64("limit", h.maxBody), slog.String("path", r.URL.Path))
	w.Header().Set("Connection", "close")
	http.Error(w, "the body is larger than "+strconv.FormatInt(h.maxBody, 10)+" bytes", http.StatusRequestEntityTooLarge)
}

// challenge answers an RFC 9421-verified activation challenge.
func (h *Handler) challenge(w http.ResponseWriter, r *http.Request, body []byte, wh *Webhook) {
	if h.reg == nil || wh.Signature == nil && !h.hooks.Unverified {
		http.Error(w, "this endpoint expects no activation challenge", http.StatusForbidden)
		return
	}
	answer, err := AnswerChallenge(body, *h.reg)
	if err == nil && wh.Signature != nil && wh.Signature.Agent != "" && wh.Signature.Agent != h.reg.SellerAgentURL {
		err = fmt.Errorf("%w: the challenge is signed by %s's keys, not the registered seller agent's", ErrChallengeMismatch, wh.Signature.Agent)
	}
	if err != nil {
		h.log.LogAttrs(r.Context(), slog.LevelWarn, "receive: activation challenge does not match the registration; not echoed",
			slog.Any("error", err), slog.String("path", r.URL.Path))
		http.Error(w, "the challenge does not match this registration", http.StatusForbidden)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(answer)
}

// members are a body's top-level members by their exact names (decoding
// into a struct, encoding/json would also match other cases); nil when the
// body is not an object.
func members(body []byte) map[string]json.RawMessage {
	var doc map[string]json.RawMessage
	if json.Unmarshal(body, &doc) != nil {
		return nil
	}
	return doc
}

// idempotencyKey is the body's idempotency_key member.
func idempotencyKey(doc map[string]json.RawMessage) (string, error) {
	if doc == nil {
		return "", errors.New("the body is not a JSON object with an idempotency_key")
	}
	raw, ok := doc["idempotency_key"]
	if !ok {
		return "", errors.New("idempotency_key is missing")
	}
	var key string
	if err := json.Unmarshal(raw, &key); err != nil || !ident.Valid(key, 16, 255) {
		return "", errors.New("idempotency_key must be a string of 16 to 255 characters of [A-Za-z0-9_.:-]")
	}
	return key, nil
}

// own runs next as the delivery's owner and records the outcome.
func (h *Handler) own(w http.ResponseWriter, r *http.Request, wh *Webhook, claim DedupClaim, claimedAt time.Time) {
	// next ends before the lease does, leaving time to record the outcome:
	// past the lease another pod may take the delivery over.
	ctx, cancel := context.WithDeadline(context.WithoutCancel(r.Context()), claimedAt.Add(h.lease-leaseMargin(h.lease)))
	defer cancel()
	rec := &heldResponse{header: http.Header{}}
	settled := false
	defer func() {
		if !settled { // next panicked: let the sender's retry run it again
			h.release(ctx, wh, claim)
		}
	}()
	req := r.WithContext(context.WithValue(ctx, webhookKey{}, wh))
	req.Body = io.NopCloser(bytes.NewReader(wh.Body))
	req.ContentLength = int64(len(wh.Body))
	h.next.ServeHTTP(rec, req)
	settled = true
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	if rec.status < 100 || rec.status > 999 { // net/http would panic
		h.release(ctx, wh, claim)
		http.Error(w, "the webhook handler answered an invalid status", http.StatusInternalServerError)
		return
	}
	if rec.status < 200 || rec.status > 299 {
		h.release(ctx, wh, claim)
		rec.send(w)
		return
	}
	// Recorded on a context of its own (next may have used its time up),
	// within the lease: past it another claim may own the delivery.
	rctx, rcancel := context.WithDeadline(context.WithoutCancel(ctx), claimedAt.Add(h.lease))
	defer rcancel()
	switch err := h.dedup.Complete(rctx, claim, h.now()); {
	case errors.Is(err, ErrNotOwner):
		// Nothing was acknowledged durably here: the new owner does that.
		h.log.LogAttrs(ctx, slog.LevelWarn, "receive: the handler outlasted its lease and another claim took the delivery over; answering 503; raise HandlerConfig.Lease",
			slog.String("sender", wh.Sender), slog.String("idempotency_key", wh.IdempotencyKey), slog.Duration("lease", h.lease))
		http.Error(w, "try again later", http.StatusServiceUnavailable)
		return
	case err != nil:
		h.log.LogAttrs(ctx, slog.LevelError, "receive: the dedup store failed to record a processed webhook; answering 503 so the sender retries",
			slog.String("sender", wh.Sender), slog.String("idempotency_key", wh.IdempotencyKey), slog.Any("error", err))
		http.Error(w, "try again later", http.StatusServiceUnavailable)
		return
	}
	rec.send(w)
}

// recordTimeout bounds recording a claim's outcome.
const recordTimeout = 10 * time.Second

// leaseMargin is how long before its lease ends next's context does.
func leaseMargin(lease time.Duration) time.Duration { return min(lease/10, 5*time.Second) }

func (h *Handler) release(ctx context.Context, wh *Webhook, claim DedupClaim) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
	defer cancel()
	if err := h.dedup.Release(rctx, claim, h.now()); err != nil {
		h.log.LogAttrs(ctx, slog.LevelError, "receive: the dedup store failed to release a claim; the sender's retry waits for its lease",
			slog.String("sender", wh.Sender), slog.String("idempotency_key", wh.IdempotencyKey), slog.Any("error", err))
	}
}

// heldResponse is next's response, held until the delivery's outcome is
// recorded.
type heldResponse struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (rr *heldResponse) Header() http.Header { return rr.header }

func (rr *heldResponse) WriteHeader(status int) {
	if rr.status == 0 && (status >= 200 || status < 100) { // informational answers are not final
		rr.status = status
	}
}

var errResponseTooLarge = fmt.Errorf("receive: a webhook response is limited to %d bytes", MaxResponseBytes)

func (rr *heldResponse) Write(p []byte) (int, error) {
	if rr.status == 0 {
		rr.status = http.StatusOK
	}
	if rr.body.Len()+len(p) > MaxResponseBytes {
		return 0, errResponseTooLarge
	}
	return rr.body.Write(p)
}

func (rr *heldResponse) send(w http.ResponseWriter) {
	for k, v := range rr.header {
		w.Header()[k] = v
	}
	w.Header().Del("Content-Length") // the body may have been cut at MaxResponseBytes
	w.WriteHeader(rr.status)
	_, _ = w.Write(rr.body.Bytes())
}
