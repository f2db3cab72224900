package webhook

import (
	"cmp"
	"errors"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Retry policy defaults, the Python AdCP SDK's.
const (
	MaxAttemptsDefault = 3
	// MaxAttemptsLimit is the most MaxAttempts can be: the Postgres
	// supervisor stores attempt counts as integer.
	MaxAttemptsLimit = 1<<31 - 1
	// MaxAttemptsUntilHorizon, as MaxAttempts, retries a delivery until
	// its Horizon passes, with no count of attempts; it needs a Horizon.
	MaxAttemptsUntilHorizon = -1
	BaseDelayDefault        = time.Second
	MaxDelayDefault         = 30 * time.Second
	SinkTimeoutDefault      = 5 * time.Second
)

// Retry horizon bounds: AdCP 3.2's delivery_retry_horizon_seconds is 24 h
// to 7 d.
const (
	// HorizonDefault is the retry horizon when RetryPolicy.Horizon is 0:
	// the spec's floor, which receivers without an advertised horizon
	// assume too.
	HorizonDefault = 24 * time.Hour
	// HorizonMin is the shortest horizon AdCP 3.2 allows.
	HorizonMin = 24 * time.Hour
	// HorizonMax is the longest horizon AdCP 3.2 allows.
	HorizonMax = 7 * 24 * time.Hour
	// NoHorizon, as RetryPolicy.Horizon, turns the horizon off: only
	// MaxAttempts bounds retries, and [Supervisor.DeliveryRetryHorizon]
	// reports 0, which an AdCP 3.2 seller cannot advertise. For non-AdCP
	// use.
	NoHorizon time.Duration = -1
)

// ProductionRetryPolicy is the retry policy to run a durable
// ([PostgresSupervisor]) AdCP seller with: every delivery is retried until
// its horizon passes, not for a fixed count, so a buyer's outage of up to
// a day loses nothing. Delays start at 1 s and double to at most 10
// minutes (with jitter: 0.5 to 1 times that), so a receiver that answers
// 503 a few times, as the AdCP conformance runner's does, gets the
// delivery within seconds, and a long outage costs about six attempts an
// hour per delivery; an endpoint that keeps failing opens its circuit
// breaker, which holds its deliveries back uncharged and lets one probe
// through at a time. Adjust the fields to taste: the horizon may be 24 h
// to 7 d.
//
// The zero RetryPolicy (3 attempts within about 3 s, the Python SDK's) is
// kept as the default for compatibility; it gives up on any outage longer
// than a few seconds.
func ProductionRetryPolicy() RetryPolicy {
	return RetryPolicy{
		MaxAttempts: MaxAttemptsUntilHorizon,
		BaseDelay:   time.Second,
		MaxDelay:    10 * time.Minute,
		Horizon:     HorizonDefault,
	}
}

// RetryPolicy decides when a failed attempt is retried. The zero value is the
// Python SDK's policy: 3 attempts, 1 s base delay doubling to at most 30 s,
// jitter on.
type RetryPolicy struct {
	// MaxAttempts is the most attempts one delivery gets, counting the
	// first: 1 to MaxAttemptsLimit, or MaxAttemptsUntilHorizon to let the
	// Horizon alone bound retries. Defaults to 3.
	MaxAttempts int
	// BaseDelay is the delay before the second attempt; each later attempt
	// doubles it. Defaults to 1s.
	BaseDelay time.Duration
	// MaxDelay caps every delay, including one raised by Retry-After.
	// Defaults to 30s.
	MaxDelay time.Duration
	// NoJitter turns jitter off. With jitter on (the zero value) each delay
	// is multiplied by a random factor in [0.5, 1.0).
	NoJitter bool
	// Horizon stops retries that would start later than the first attempt
	// (or acceptance, while there has been none) plus Horizon: AdCP 3.2's
	// delivery_retry_horizon_seconds, "a maximum interval from the first
	// attempt", which the seller advertises and must never pass. A
	// redelivery does not extend it. HorizonMin (24 h) to HorizonMax
	// (7 d); 0 means HorizonDefault (24 h); NoHorizon turns it off.
	Horizon time.Duration
	// shortHorizon lets tests use a horizon below HorizonMin (see
	// export_test.go); no user can set it.
	shortHorizon bool
	// SinkTimeout bounds each [LogSink] call. Defaults to 5s.
	SinkTimeout time.Duration
	// Classify decides what a response or transport error means. Defaults to
	// [DefaultClassifier]. One that panics is logged at Error and the
	// attempt classified by DefaultClassifier; a failed attempt's record
	// says so.
	Classify Classifier
}

func (p RetryPolicy) withDefaults() RetryPolicy {
	p.MaxAttempts = cmp.Or(p.MaxAttempts, MaxAttemptsDefault)
	p.BaseDelay = cmp.Or(p.BaseDelay, BaseDelayDefault)
	p.MaxDelay = cmp.Or(p.MaxDelay, MaxDelayDefault)
	p.SinkTimeout = cmp.Or(p.SinkTimeout, SinkTimeoutDefault)
	p.Horizon = cmp.Or(p.Horizon, HorizonDefault)
	if p.Classify == nil {
		p.Classify = DefaultClassifier
	}
	return p
}

// validate checks p, naming fields under prefix ("MemoryConfig.Retry.").
func (p RetryPolicy) validate(prefix string) error {
	switch {
	case p.MaxAttempts == MaxAttemptsUntilHorizon && p.Horizon == NoHorizon:
		return badConfig(prefix+"Horizon", "is NoHorizon, but MaxAttempts is MaxAttemptsUntilHorizon: retries would never end; set a Horizon (24h to 168h) or a MaxAttempts")
	case p.MaxAttempts < 1 && p.MaxAttempts != MaxAttemptsUntilHorizon:
		return badConfig(prefix+"MaxAttempts", "is %d; use 1 to %d (0 means %d), or MaxAttemptsUntilHorizon", p.MaxAttempts, MaxAttemptsLimit, MaxAttemptsDefault)
	case p.MaxAttempts > MaxAttemptsLimit:
		return badConfig(prefix+"MaxAttempts", "is %d; use at most %d (MaxAttemptsLimit), or MaxAttemptsUntilHorizon with a Horizon to retry until the horizon", p.MaxAttempts, MaxAttemptsLimit)
	case p.BaseDelay < 0:
		return badConfig(prefix+"BaseDelay", "is negative")
	case p.MaxDelay < p.BaseDelay:
		return badConfig(prefix+"MaxDelay", "is %v (the default when unset), below BaseDelay %v; raise MaxDelay or lower BaseDelay", p.MaxDelay, p.BaseDelay)
	case p.Horizon < 0 && p.Horizon != NoHorizon:
		return badConfig(prefix+"Horizon", "is %v; use 24h to 168h (0 means 24h), or NoHorizon to turn the horizon off", p.Horizon)
	case p.Horizon > 0 && !p.shortHorizon && (p.Horizon < HorizonMin || p.Horizon > HorizonMax):
		return badConfig(prefix+"Horizon", "is %v; AdCP 3.2 allows 24h to 168h (0 means 24h); use NoHorizon to turn the horizon off for non-AdCP use", p.Horizon)
	case p.Horizon > 0 && !p.shortHorizon && p.Horizon%time.Second != 0:
		return badConfig(prefix+"Horizon", "is %v; use whole seconds: AdCP advertises the horizon in seconds, and the advertised one must not be shorter than the real one", p.Horizon)
	case p.SinkTimeout < 0:
		return badConfig(prefix+"SinkTimeout", "is negative")
	}
	return nil
}

// Delay returns the delay before attempt n without jitter or Retry-After:
// zero for n ≤ 1, else min(BaseDelay·2^(n−2), MaxDelay), with the policy's
// defaults applied.
func (p RetryPolicy) Delay(n int) time.Duration {
	p = p.withDefaults()
	if n <= 1 {
		return 0
	}
	d := p.BaseDelay
	for i := 2; i < n && d < p.MaxDelay; i++ {
		if d > p.MaxDelay/2 {
			return p.MaxDelay // doubling would pass the cap (or overflow)
		}
		d *= 2
	}
	return min(d, p.MaxDelay)
}

// nextDelay is the delay before attempt n after a failure: Delay(n) with
// jitter, raised to retryAfter when that is longer, capped at MaxDelay.
// p must have its defaults applied.
func (p RetryPolicy) nextDelay(n int, retryAfter time.Duration, random func() float64) time.Duration {
	d := p.Delay(n)
	if !p.NoJitter {
		d = time.Duration(float64(d) * (0.5 + random()/2))
	}
	return min(max(d, retryAfter), p.MaxDelay)
}

// Verdict is what a classifier decides about one attempt.
type Verdict int

const (
	// VerdictDelivered: the receiver accepted the webhook.
	VerdictDelivered Verdict = iota
	// VerdictRetry: try again after a delay, if attempts remain.
	VerdictRetry
	// VerdictFail: give up now; retrying cannot help.
	VerdictFail
)

func (v Verdict) String() string {
	switch v {
	case VerdictDelivered:
		return "delivered"
	case VerdictRetry:
		return "retry"
	case VerdictFail:
		return "fail"
	}
	return "Verdict(" + strconv.Itoa(int(v)) + ")"
}

// Classification is a classifier's decision about one attempt.
type Classification struct {
	Verdict Verdict
	// BreakerFailure reports whether the attempt counts as a failure of the
	// endpoint for its circuit breaker. A delivered attempt counts as a
	// breaker success; any other attempt that is not a breaker failure
	// (a 429, a permanent 4xx) leaves the breaker as it was.
	BreakerFailure bool
	// RetryAfter is the least delay the receiver asked for, or 0.
	RetryAfter time.Duration
}

// Classifier decides what a response means. resp is nil exactly when err is
// not (no response was obtained). now is the attempt's end, for Retry-After
// dates. A Classifier must be safe for concurrent use.
type Classifier func(resp *Response, err error, now time.Time) Classification

// DefaultClassifier is the AdCP classification:
//
//   - 2xx: delivered (receivers answer 2xx for duplicates too);
//   - transport errors, timeouts and DNS failures: retry, breaker failure;
//   - a destination HTTPSender refuses to dial ([ErrBlockedDestination]):
//     fail, not a breaker failure;
//   - a delivery whose tenant has no signing key
//     ([ErrSigningKeyMissing]): fail, not a breaker failure;
//   - a request that could not be signed otherwise ([ErrSigning]): retry,
//     not a breaker failure;
//   - 408, 5xx: retry, breaker failure;
//   - 425, 429: retry, not a breaker failure (the endpoint is alive);
//   - 401 with WWW-Authenticate: Signature error="webhook_*" (the buyer's
//     verifier refused the signature, its authority or its mode): fail,
//     not a breaker failure; the code is recorded in the attempt's error.
//     Every retry would be refused the same way (AdCP 3.2 makes it
//     terminal for the delivery);
//   - any other 401: retry, not a breaker failure. AdCP 3.2 says a seller
//     SHOULD treat it as a transient configuration error of the receiver:
//     retried on the normal schedule, never a reason to disable anything,
//     and no sign that the endpoint is down;
//   - 409 (key bound to another payload), 3xx (never followed), other 4xx
//     and anything else: fail, not a breaker failure.
//
// Retry-After, in seconds or as an HTTP date, is honoured on 429 and 503.
func DefaultClassifier(resp *Response, err error, now time.Time) Classification {
	if resp == nil {
		if errors.Is(err, ErrBlockedDestination) || errors.Is(err, ErrSigningKeyMissing) {
			return Classification{Verdict: VerdictFail}
		}
		if errors.Is(err, ErrSigning) { // nothing reached the endpoint
			return Classification{Verdict: VerdictRetry}
		}
		return Classification{Verdict: VerdictRetry, BreakerFailure: true}
	}
	code := resp.StatusCode
	switch {
	case code >= 200 && code < 300:
		return Classification{Verdict: VerdictDelivered}
	case code == http.StatusTooManyRequests:
		return Classification{Verdict: VerdictRetry, RetryAfter: parseRetryAfter(resp.Header.Get("Retry-After"), now)}
	case code == http.StatusServiceUnavailable:
		return Classification{Verdict: VerdictRetry, BreakerFailure: true, RetryAfter: parseRetryAfter(resp.Header.Get("Retry-After"), now)}
	case code == http.StatusRequestTimeout || code >= 500:
		return Classification{Verdict: VerdictRetry, BreakerFailure: true}
	case code == http.StatusTooEarly:
		return Classification{Verdict: VerdictRetry}
	case code == http.StatusUnauthorized && SignatureErrorCode(resp.Header) == "":
		return Classification{Verdict: VerdictRetry}
	}
	return Classification{Verdict: VerdictFail}
}

// SignatureErrorCode returns the AdCP webhook error code of a receiver's
// "WWW-Authenticate: Signature error=\"webhook_...\"" challenge, or "" when
// there is none. Only a code of the taxonomy's shape (webhook_ and lower
// case letters, digits and underscores, at most 64 bytes) is returned, so
// it is safe to record and log.
func SignatureErrorCode(h http.Header) string {
	for _, v := range h.Values("WWW-Authenticate") {
		scheme, params, _ := strings.Cut(strings.TrimSpace(v), " ")
		if !strings.EqualFold(scheme, "Signature") {
			continue
		}
		i := strings.Index(params, `error="`)
		if i < 0 {
			continue
		}
		code, _, ok := strings.Cut(params[i+len(`error="`):], `"`)
		if ok && len(code) <= 64 && strings.HasPrefix(code, "webhook_") &&
			strings.IndexFunc(code, func(r rune) bool { return !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_') }) < 0 {
			return code
		}
	}
	return ""
}

// parseRetryAfter reads a Retry-After value: delay-seconds or an HTTP date.
// Anything else, or a time in the past, is 0.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		return time.Duration(min(secs, int64(365*24*3600))) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// defaultRandom is the jitter source.
func defaultRandom() float64 { return rand.Float64() }
