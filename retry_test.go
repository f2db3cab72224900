package webhook

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestRetryDelay(t *testing.T) {
	t.Parallel()
	p := RetryPolicy{}
	for n, want := range map[int]time.Duration{
		0: 0, 1: 0, // no delay before the first attempt
		2: time.Second, 3: 2 * time.Second, 4: 4 * time.Second, 5: 8 * time.Second, 6: 16 * time.Second,
		7: 30 * time.Second, 8: 30 * time.Second, 100: 30 * time.Second, // capped
	} {
		require.Equal(t, want, p.Delay(n), "attempt %d", n)
	}
	custom := RetryPolicy{BaseDelay: 100 * time.Millisecond, MaxDelay: 250 * time.Millisecond}
	require.Equal(t, 100*time.Millisecond, custom.Delay(2))
	require.Equal(t, 200*time.Millisecond, custom.Delay(3))
	require.Equal(t, 250*time.Millisecond, custom.Delay(4))
}

func TestRetryJitterBounds(t *testing.T) {
	t.Parallel()
	p := RetryPolicy{}.withDefaults()
	r := rand.New(rand.NewPCG(1, 2))
	lo, hi := time.Hour, time.Duration(0)
	for range 10_000 {
		d := p.nextDelay(3, 0, r.Float64)
		lo, hi = min(lo, d), max(hi, d)
		require.GreaterOrEqual(t, d, time.Second, "≥ 0.5 × 2s")
		require.Less(t, d, 2*time.Second, "< 1.0 × 2s")
	}
	require.Less(t, lo, 1100*time.Millisecond, "jitter spreads over the whole range")
	require.Greater(t, hi, 1900*time.Millisecond)
	require.Equal(t, time.Second, p.nextDelay(3, 0, func() float64 { return 0 }))

	noJitter := RetryPolicy{NoJitter: true}.withDefaults()
	require.Equal(t, 2*time.Second, noJitter.nextDelay(3, 0, func() float64 { panic("no jitter wanted") }))
}

func TestRetryAfterIsAFloorCappedAtMaxDelay(t *testing.T) {
	t.Parallel()
	p := RetryPolicy{NoJitter: true}.withDefaults()
	require.Equal(t, 10*time.Second, p.nextDelay(2, 10*time.Second, nil))
	require.Equal(t, 2*time.Second, p.nextDelay(3, time.Second, nil), "a shorter Retry-After does not shorten the delay")
	require.Equal(t, 30*time.Second, p.nextDelay(2, time.Hour, nil), "capped at MaxDelay")
}

func TestParseRetryAfter(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for in, want := range map[string]time.Duration{
		"":                              0,
		"7":                             7 * time.Second,
		" 12 ":                          12 * time.Second,
		"0":                             0,
		"-3":                            0,
		"soon":                          0,
		"Fri, 02 Jan 2026 03:04:35 GMT": 30 * time.Second,
		"Fri, 02 Jan 2026 03:00:00 GMT": 0, // in the past
	} {
		require.Equal(t, want, parseRetryAfter(in, now), "%q", in)
	}
}

func TestDefaultClassifier(t *testing.T) {
	t.Parallel()
	now := time.Now()
	resp := func(code int, h ...string) *Response {
		hdr := http.Header{}
		for i := 0; i+1 < len(h); i += 2 {
			hdr.Set(h[i], h[i+1])
		}
		return &Response{StatusCode: code, Header: hdr}
	}
	for name, tc := range map[string]struct {
		resp *Response
		err  error
		want Classification
	}{
		"200":             {resp(200), nil, Classification{Verdict: VerdictDelivered}},
		"204":             {resp(204), nil, Classification{Verdict: VerdictDelivered}},
		"transport":       {nil, errors.New("dial tcp: refused"), Classification{Verdict: VerdictRetry, BreakerFailure: true}},
		"408":             {resp(408), nil, Classification{Verdict: VerdictRetry, BreakerFailure: true}},
		"425":             {resp(425), nil, Classification{Verdict: VerdictRetry}},
		"429":             {resp(429, "Retry-After", "5"), nil, Classification{Verdict: VerdictRetry, RetryAfter: 5 * time.Second}},
		"500":             {resp(500), nil, Classification{Verdict: VerdictRetry, BreakerFailure: true}},
		"502":             {resp(502, "Retry-After", "5"), nil, Classification{Verdict: VerdictRetry, BreakerFailure: true}},
		"503":             {resp(503, "Retry-After", "9"), nil, Classification{Verdict: VerdictRetry, BreakerFailure: true, RetryAfter: 9 * time.Second}},
		"301":             {resp(301, "Location", "https://elsewhere.example/"), nil, Classification{Verdict: VerdictFail}},
		"400":             {resp(400), nil, Classification{Verdict: VerdictFail}},
		"401 sig":         {resp(401, "WWW-Authenticate", `Signature error="webhook_signature_invalid"`), nil, Classification{Verdict: VerdictFail}},
		"401 mode":        {resp(401, "WWW-Authenticate", `Signature error="webhook_mode_mismatch", realm="x"`), nil, Classification{Verdict: VerdictFail}},
		"401 plain":       {resp(401), nil, Classification{Verdict: VerdictRetry}},
		"401 bearer":      {resp(401, "WWW-Authenticate", `Bearer realm="buyer"`), nil, Classification{Verdict: VerdictRetry}},
		"401 other code":  {resp(401, "WWW-Authenticate", `Signature error="request_signature_invalid"`), nil, Classification{Verdict: VerdictRetry}},
		"404":             {resp(404), nil, Classification{Verdict: VerdictFail}},
		"409":             {resp(409), nil, Classification{Verdict: VerdictFail}},
		"422":             {resp(422), nil, Classification{Verdict: VerdictFail}},
		"100 informative": {resp(199), nil, Classification{Verdict: VerdictFail}},
	} {
		require.Equal(t, tc.want, DefaultClassifier(tc.resp, tc.err, now), name)
	}
}

func TestRetryPolicyDefaults(t *testing.T) {
	t.Parallel()
	p := RetryPolicy{}.withDefaults()
	require.Equal(t, 3, p.MaxAttempts)
	require.Equal(t, time.Second, p.BaseDelay)
	require.Equal(t, 30*time.Second, p.MaxDelay)
	require.Equal(t, 5*time.Second, p.SinkTimeout)
	require.False(t, p.NoJitter)
	require.Equal(t, 24*time.Hour, p.Horizon)
	require.NoError(t, p.validate(""))
}

func TestRetryDelayNeverOverflows(t *testing.T) {
	t.Parallel()
	p := RetryPolicy{BaseDelay: time.Second, MaxDelay: math.MaxInt64}
	prev := time.Duration(0)
	for n := 2; n < 200; n++ {
		d := p.Delay(n)
		require.GreaterOrEqual(t, d, prev, "attempt %d", n)
		prev = d
	}
	require.Equal(t, time.Duration(math.MaxInt64), prev)
}

func TestSignatureErrorCode(t *testing.T) {
	t.Parallel()
	for v, want := range map[string]string{
		`Signature error="webhook_signature_invalid"`:               "webhook_signature_invalid",
		`signature error="webhook_target_uri_malformed", realm="x"`: "webhook_target_uri_malformed",
		`Bearer error="webhook_signature_invalid"`:                  "",
		`Signature error="webhook_<script>"`:                        "",
		`Signature error="webhook_` + strings.Repeat("a", 80) + `"`: "",
		`Signature`: "",
	} {
		require.Equal(t, want, SignatureErrorCode(http.Header{"Www-Authenticate": {v}}), v)
	}
	require.Equal(t, "HTTP 401 Unauthorized (webhook_signature_invalid)",
		describeResponse(&Response{StatusCode: 401, Header: http.Header{"Www-Authenticate": {`Signature error="webhook_signature_invalid"`}}}))
}

// TestRetryPolicyHorizonBounds: AdCP 3.2's horizon is 24 h to 7 d; 0 means
// 24 h, NoHorizon turns it off, anything else is refused with the way out.
func TestRetryPolicyHorizonBounds(t *testing.T) {
	t.Parallel()
	for _, h := range []time.Duration{0, HorizonMin, 36 * time.Hour, HorizonMax, NoHorizon} {
		require.NoError(t, RetryPolicy{Horizon: h}.withDefaults().validate("R."), h)
	}
	for _, h := range []time.Duration{time.Millisecond, time.Hour, HorizonMin - time.Second, HorizonMax + time.Second, -2} {
		err := RetryPolicy{Horizon: h}.withDefaults().validate("R.")
		var ce *ConfigError
		require.ErrorAs(t, err, &ce, h)
		require.Equal(t, "R.Horizon", ce.Field)
		require.ErrorContains(t, err, "NoHorizon", "the error names the opt-out")
		require.ErrorContains(t, err, "24h to 168h")
	}
	err := RetryPolicy{Horizon: HorizonMin + 900*time.Millisecond}.withDefaults().validate("R.")
	require.ErrorContains(t, err, "whole seconds", "advertised in seconds, so no fraction")
	require.NoError(t, RetryPolicy{Horizon: 50 * time.Millisecond, shortHorizon: true}.withDefaults().validate(""),
		"the fault model's escape hatch")

	p := ProductionRetryPolicy()
	require.NoError(t, p.withDefaults().validate(""))
	require.Equal(t, MaxAttemptsUntilHorizon, p.MaxAttempts)
	require.Equal(t, HorizonDefault, p.Horizon)
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

// AdCP's activity status: timeout means no response in time on a
// connection that was made; a timeout while connecting is a connection
// error.
func TestIsTimeoutTellsConnectingFromWaiting(t *testing.T) {
	t.Parallel()
	for err, want := range map[error]bool{
		context.DeadlineExceeded: true,
		&url.Error{Op: "Post", URL: "https://b.example/", Err: timeoutErr{}}:                                true, // awaiting headers
		&url.Error{Op: "Post", URL: "https://b.example/", Err: &net.OpError{Op: "read", Err: timeoutErr{}}}: true,
		&url.Error{Op: "Post", URL: "https://b.example/", Err: &net.OpError{Op: "dial", Err: timeoutErr{}}}: false,
		&net.DNSError{Err: "timeout", Name: "b.example", IsTimeout: true}:                                   false,
		errors.New("net/http: TLS handshake timeout"):                                                       false,
		errors.New("connection refused"):                                                                    false,
	} {
		require.Equal(t, want, isTimeout(err), "%v", err)
	}
}
