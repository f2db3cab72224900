package webhook

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/adcpkit/webhook/internal/canon"
	"github.com/adcpkit/webhook/internal/ssrf"
	"github.com/adcpkit/webhook/receive"
)

// Sender defaults.
const (
	SendTimeoutDefault      = 10 * time.Second
	MaxResponseBytesDefault = 64 << 10
)

// Limits on a receiver's response headers. A response over either is not
// read: the attempt fails with [ErrResponseHeadersTooLarge] (a transport
// failure, retried and counted by the breaker), so a receiver cannot make
// an attempt cost more than these. MaxResponseHeaderBytes is enforced by
// the sender's own transport (not by a caller's Client); the field count
// by every HTTPSender.
const (
	MaxResponseHeaderBytes  = 32 << 10
	MaxResponseHeaderFields = 100
)

// Request is one attempt to deliver a webhook.
type Request struct {
	// URL is the destination.
	URL string
	// Body is the exact JSON to POST. It is shared between attempts: a
	// Sender must not modify it.
	Body []byte
	// IdempotencyKey is the delivery's key (also inside Body for MCP
	// webhooks).
	IdempotencyKey string
	// Authentication, when set, selects the legacy scheme instead of an
	// RFC 9421 signature.
	Authentication *Authentication
	// Headers are the delivery's extra headers (Routing.Headers), already
	// validated; a Sender adds them to the request.
	Headers map[string]string
	// Tenant is the delivery's Routing.Tenant: whose key signs the
	// request ("" for the default).
	Tenant string
	// DeliveryID and Attempt identify the attempt, for logs.
	DeliveryID string
	Attempt    int
}

// Response is what the receiver answered.
type Response struct {
	StatusCode int
	Header     http.Header
	// Body is the start of the response body, at most the sender's limit.
	Body []byte
}

// Sender performs one HTTP attempt.
//
// Send returns an error only when no HTTP response was obtained (connection
// refused, timeout, blocked destination); any status code is a response, and
// deciding what it means is the [RetryPolicy]'s job. Send must honour ctx,
// must not modify or retain req after returning, and must be safe for
// concurrent use.
type Sender interface {
	Send(ctx context.Context, req *Request) (*Response, error)
}

// SenderFunc adapts a function to [Sender].
type SenderFunc func(ctx context.Context, req *Request) (*Response, error)

// Send calls f(ctx, req).
func (f SenderFunc) Send(ctx context.Context, req *Request) (*Response, error) { return f(ctx, req) }

// HTTPSenderConfig configures [NewHTTPSender]. The zero value is valid.
type HTTPSenderConfig struct {
	// Timeout bounds one attempt, from dialling to the end of the response.
	// Defaults to 10s.
	Timeout time.Duration
	// MaxResponseBytes is how much of a response body is read (the rest is
	// discarded unread). Defaults to 64 KiB.
	MaxResponseBytes int
	// UserAgent is sent on every request. Defaults to
	// "adcpkit-webhook/1 (+https://github.com/adcpkit/webhook)".
	UserAgent string
	// Client replaces the HTTP client. The sender then uses it as it is:
	// Timeout is ignored, and the client's own timeout, redirect, proxy and
	// destination policies apply. Defaults to a client built from the other
	// fields that ignores proxy environment variables and never follows
	// redirects.
	Client *http.Client
	// AllowPrivateDestinations lets the sender dial loopback, private
	// (RFC 1918, unique local), link-local and CGNAT addresses, for
	// development and tests. Cloud metadata, multicast, unspecified and
	// reserved addresses stay blocked. Defaults to false.
	AllowPrivateDestinations bool
	// Development is the one switch for local development and tests: the
	// sender dials loopback and private addresses (AllowPrivateDestinations),
	// and a MemorySupervisor or PostgresSupervisor given this sender accepts
	// plain http:// URLs (their AllowInsecureHTTP), logging once that it
	// runs in development mode. Never set it in production: it lets a
	// buyer's URL reach your internal network. Defaults to false.
	Development bool
	// Propagate, when set, adds headers to every attempt from the
	// attempt's context: trace propagation (webhookotel.PropagateTraceContext
	// sets traceparent and tracestate). They are not signed, and buyers see
	// them: set it only when your buyers want them. A name the sender sets
	// itself, a name that is not an HTTP token, a value with a control
	// character or longer than 4,096 bytes, and headers past the eighth
	// are ignored. Defaults to nil: no such headers.
	Propagate func(ctx context.Context, set func(name, value string))
	// Resolver looks up destination hosts. Defaults to net.DefaultResolver.
	Resolver Resolver
	// Signer signs every attempt that has no legacy Authentication, with a
	// fresh created time and nonce over the same bytes; see
	// [NewRFC9421Signer]. A delivery with a Routing.Tenant needs a
	// [TenantSigner] that has a key for it. Defaults to nil: requests go
	// unsigned (and no tenant can be signed for).
	Signer Signer
	// Now is the clock for legacy HMAC timestamps. Defaults to time.Now.
	Now func() time.Time
}

// HTTPSender POSTs webhooks over HTTP. It sends the exact body bytes with
// Content-Type application/json and Accept-Encoding identity, reads at most
// MaxResponseBytes of the answer and refuses bodies over [MaxBodyBytes].
// Unless [HTTPSenderConfig.Client] replaces its client, it also times out,
// never follows redirects (a 3xx is returned as a response), ignores proxy
// environment variables, and refuses to dial private, loopback, link-local,
// CGNAT, multicast, unspecified, reserved and cloud-metadata addresses
// ([ErrBlockedDestination]), checking the addresses it actually dials so
// that DNS rebinding cannot get past it. With a caller's Client, guarding
// destinations is the caller's job.
//
// With [HTTPSenderConfig.Signer] set, every attempt is signed per the AdCP
// RFC 9421 webhook profile, unless the request carries legacy
// [Authentication], which then replaces the signature:
// Bearer sends "Authorization: Bearer <credentials>"; HMAC-SHA256 sends
// "X-ADCP-Timestamp: <unix seconds>" and "X-ADCP-Signature: sha256=<hex>",
// the HMAC-SHA256 of "<timestamp>.<body>" keyed by the credentials.
//
// An HTTPSender is safe for concurrent use.
type HTTPSender struct {
	client    *http.Client
	maxResp   int
	userAgent string
	signer    Signer
	now       func() time.Time
	dev       bool // HTTPSenderConfig.Development
	propagate func(ctx context.Context, set func(name, value string))
}

// developmentSender is a sender that asks its supervisor to accept plain
// http:// URLs (HTTPSenderConfig.Development).
type developmentSender interface{ development() bool }

func (s *HTTPSender) development() bool { return s.dev }

// NewHTTPSender returns an HTTPSender. A bad config is a [*ConfigError].
func NewHTTPSender(cfg HTTPSenderConfig) (*HTTPSender, error) {
	if cfg.Timeout < 0 {
		return nil, badConfig("HTTPSenderConfig.Timeout", "is negative")
	}
	if cfg.MaxResponseBytes < 0 {
		return nil, badConfig("HTTPSenderConfig.MaxResponseBytes", "is negative")
	}
	if cfg.Signer != nil && isNil(cfg.Signer) {
		return nil, badConfig("HTTPSenderConfig.Signer", "is a typed nil; leave it nil for unsigned requests")
	}
	if cfg.Resolver != nil && isNil(cfg.Resolver) {
		return nil, badConfig("HTTPSenderConfig.Resolver", "is a typed nil; leave it nil for net.DefaultResolver")
	}
	s := &HTTPSender{
		client:    cfg.Client,
		maxResp:   cmp.Or(cfg.MaxResponseBytes, MaxResponseBytesDefault),
		userAgent: cmp.Or(cfg.UserAgent, "adcpkit-webhook/1 (+https://github.com/adcpkit/webhook)"),
		signer:    cfg.Signer,
		now:       cfg.Now,
		dev:       cfg.Development,
		propagate: cfg.Propagate,
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.client == nil {
		timeout := cmp.Or(cfg.Timeout, SendTimeoutDefault)
		dialer := &ssrf.Dialer{Dialer: &net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}, Resolver: cfg.Resolver,
			AllowPrivate: cfg.AllowPrivateDestinations || cfg.Development, Blocked: ErrBlockedDestination,
			PrivateHint: "for local development set HTTPSenderConfig.Development"}
		s.client = &http.Client{
			Timeout: timeout,
			Transport: &http.Transport{
				Proxy:                  nil, // never from the environment
				DialContext:            dialer.DialContext,
				ForceAttemptHTTP2:      true,
				MaxIdleConns:           256,
				MaxIdleConnsPerHost:    64,
				IdleConnTimeout:        90 * time.Second,
				TLSHandshakeTimeout:    timeout,
				ResponseHeaderTimeout:  timeout,
				DisableCompression:     true,
				MaxResponseHeaderBytes: MaxResponseHeaderBytes,
			},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	return s, nil
}

// Send POSTs req.Body to req.URL.
func (s *HTTPSender) Send(ctx context.Context, req *Request) (*Response, error) {
	if len(req.Body) > MaxBodyBytes {
		return nil, fmt.Errorf("%w: %d bytes, at most %d", ErrBodyTooLarge, len(req.Body), MaxBodyBytes)
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, req.URL, bytes.NewReader(req.Body))
	if err != nil {
		// Not err: net/url quotes the whole URL, query and all.
		return nil, fmt.Errorf("webhook: building request: the URL %s does not parse", LoggableURL(req.URL))
	}
	// A U-label host goes on the wire as the A-label the signature covers
	// (net/http would punycode it without folding its case).
	if hreq.URL.Host, err = canon.ASCIIHost(hreq.URL.Host); err != nil {
		return nil, fmt.Errorf("webhook: building request: %w", err)
	}
	hreq.Host = hreq.URL.Host
	if s.propagate != nil { // before the registration's own headers, which win
		n := 0
		s.propagate(ctx, func(name, value string) {
			if n < maxPropagated && checkHeaders(map[string]string{name: value}) == nil {
				hreq.Header.Set(name, value)
				n++
			}
		})
	}
	for name, value := range req.Headers {
		if !reservedHeader(name) { // validated at acceptance; a custom caller may not have
			hreq.Header.Set(name, value)
		}
	}
	hreq.Header.Set("Content-Type", "application/json")
	hreq.Header.Set("Accept-Encoding", "identity")
	hreq.Header.Set("User-Agent", s.userAgent)
	if err := s.authenticate(hreq, req); err != nil {
		return nil, err
	}
	resp, err := s.client.Do(hreq)
	if err != nil {
		return nil, sanitizeTransportError(err)
	}
	defer resp.Body.Close()
	fields := 0
	for _, vs := range resp.Header {
		fields += len(vs)
	}
	if fields > MaxResponseHeaderFields {
		return nil, fmt.Errorf("%w: %d fields, at most %d", ErrResponseHeadersTooLarge, fields, MaxResponseHeaderFields)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, int64(s.maxResp)))
	if err != nil && !errors.Is(err, io.EOF) {
		// The status arrived; a body cut short does not change what it means.
		body = nil
	}
	// Drain a little more so the connection can be reused; give up on
	// receivers that keep talking.
	_, _ = io.CopyN(io.Discard, resp.Body, 4<<10)
	return &Response{StatusCode: resp.StatusCode, Header: resp.Header, Body: body}, nil
}

// Resolver resolves host names; *net.Resolver satisfies it.
type Resolver = ssrf.Resolver

// CheckTenant returns nil when the sender can sign for tenant: "" always
// (with its Signer's default key, or unsigned without a Signer), another
// tenant when its Signer is a [TenantSigner] with a key for it. Supervisors
// call it at acceptance.
func (s *HTTPSender) CheckTenant(tenant string) error {
	if tenant == "" && s.signer == nil {
		return nil
	}
	if ts, ok := s.signer.(TenantSigner); ok { // a checker that cannot sign for tenants is no use
		return ts.CheckTenant(tenant)
	}
	if tenant == "" {
		return nil
	}
	if s.signer == nil {
		return fmt.Errorf("%w: tenant %q: the HTTPSender has no Signer; set HTTPSenderConfig.Signer to an RFC9421Signer with SignerConfig.Keys", ErrSigningKeyMissing, tenant)
	}
	return fmt.Errorf("%w: tenant %q: HTTPSenderConfig.Signer (%T) is not a TenantSigner; use an RFC9421Signer with SignerConfig.Keys", ErrSigningKeyMissing, tenant, s.signer)
}

// authenticate applies the request's legacy authentication, or else the
// RFC 9421 signature; never both.
func (s *HTTPSender) authenticate(hreq *http.Request, req *Request) error {
	a := req.Authentication
	if a == nil {
		var err error
		switch ts, ok := s.signer.(TenantSigner); {
		case ok:
			err = ts.SignTenant(hreq, req.Body, req.Tenant)
		case req.Tenant != "":
			err = fmt.Errorf("%w: tenant %q: HTTPSenderConfig.Signer is not a TenantSigner; use an RFC9421Signer with SignerConfig.Keys", ErrSigningKeyMissing, req.Tenant)
		case s.signer != nil:
			err = s.signer.Sign(hreq, req.Body)
		}
		if err != nil {
			return fmt.Errorf("%w: %w", ErrSigning, err)
		}
		return nil
	}
	switch a.Scheme {
	case AuthBearer:
		hreq.Header.Set("Authorization", "Bearer "+a.Credentials)
	case AuthHMACSHA256:
		ts := strconv.FormatInt(s.now().Unix(), 10)
		hreq.Header.Set("X-ADCP-Timestamp", ts)
		hreq.Header.Set("X-ADCP-Signature", "sha256="+receive.LegacyHMAC(a.Credentials, ts, req.Body))
	default:
		return fmt.Errorf("%w: Authentication.Scheme %q is not supported", ErrInvalidWebhook, a.Scheme)
	}
	return nil
}

// sanitizeTransportError drops the URL that net/http puts in its errors: the
// query may carry a buyer's token.
func sanitizeTransportError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	// net/http exports no error for headers over its limit (HTTP/1.1:
	// "server response headers exceeded", HTTP/2: "header list larger
	// than").
	if msg := errorString(err); strings.Contains(msg, "response headers exceeded") || strings.Contains(msg, "header list larger than") {
		return fmt.Errorf("%w: more than %d bytes", ErrResponseHeadersTooLarge, MaxResponseHeaderBytes)
	}
	return fmt.Errorf("webhook: POST failed: %w", err)
}

// maxPropagated bounds the headers HTTPSenderConfig.Propagate may add.
const maxPropagated = 8
