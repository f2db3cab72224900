package webhook

import (
	"cmp"
	"strconv"
	"time"
)

// Breaker policy defaults, the Python AdCP SDK's.
const (
	FailureThresholdDefault = 5
	SuccessThresholdDefault = 2
	OpenTimeoutDefault      = 60 * time.Second
	HalfOpenProbesDefault   = 1
)

// OpenAction is what happens to a webhook whose breaker is open.
type OpenAction int

const (
	// OpenDefer accepts the webhook and holds it, uncharged, until the
	// breaker lets a probe through. The default.
	OpenDefer OpenAction = iota
	// OpenDrop refuses the webhook at acceptance with [ErrCircuitOpen] and a
	// circuit_open [Attempt] record, as the Python SDK does. Webhooks already
	// accepted are still deferred, never dropped.
	OpenDrop
)

// BreakerPolicy configures the per-endpoint circuit breaker. The zero value is
// the Python SDK's policy.
type BreakerPolicy struct {
	// FailureThreshold consecutive breaker failures open the breaker.
	// Defaults to 5.
	FailureThreshold int
	// SuccessThreshold successes in half-open close it. Defaults to 2.
	SuccessThreshold int
	// OpenTimeout is how long the breaker stays open before it lets a probe
	// through (half-open). Defaults to 60s.
	OpenTimeout time.Duration
	// HalfOpenProbes is how many attempts may be in flight at once while
	// half-open. Defaults to 1.
	HalfOpenProbes int
	// OpenAction says what SendMCP does while the breaker is open. Defaults
	// to OpenDefer.
	OpenAction OpenAction
}

func (p BreakerPolicy) withDefaults() BreakerPolicy {
	p.FailureThreshold = cmp.Or(p.FailureThreshold, FailureThresholdDefault)
	p.SuccessThreshold = cmp.Or(p.SuccessThreshold, SuccessThresholdDefault)
	p.OpenTimeout = cmp.Or(p.OpenTimeout, OpenTimeoutDefault)
	p.HalfOpenProbes = cmp.Or(p.HalfOpenProbes, HalfOpenProbesDefault)
	return p
}

// validate checks p, naming fields under prefix ("MemoryConfig.Breaker.").
func (p BreakerPolicy) validate(prefix string) error {
	switch {
	case p.FailureThreshold < 1:
		return badConfig(prefix+"FailureThreshold", "is %d; use 1 or more", p.FailureThreshold)
	case p.SuccessThreshold < 1:
		return badConfig(prefix+"SuccessThreshold", "is %d; use 1 or more", p.SuccessThreshold)
	case p.OpenTimeout < 0:
		return badConfig(prefix+"OpenTimeout", "is negative")
	case p.HalfOpenProbes < 1:
		return badConfig(prefix+"HalfOpenProbes", "is %d; use 1 or more", p.HalfOpenProbes)
	case p.OpenAction != OpenDefer && p.OpenAction != OpenDrop:
		return badConfig(prefix+"OpenAction", "is %d; use OpenDefer or OpenDrop", p.OpenAction)
	}
	return nil
}

// BreakerState is a circuit breaker's state.
type BreakerState int

// Breaker states.
const (
	// BreakerClosed: attempts flow.
	BreakerClosed BreakerState = iota
	// BreakerOpen: no attempts until OpenTimeout has passed.
	BreakerOpen
	// BreakerHalfOpen: a bounded number of probes test the endpoint.
	BreakerHalfOpen
)

func (s BreakerState) String() string {
	switch s {
	case BreakerClosed:
		return "closed"
	case BreakerOpen:
		return "open"
	case BreakerHalfOpen:
		return "half_open"
	}
	return "BreakerState(" + strconv.Itoa(int(s)) + ")"
}

// breakerResult is what an attempt means to its breaker.
type breakerResult int

const (
	breakerNeutral breakerResult = iota // the endpoint answered, but not 2xx (429, 4xx)
	breakerSuccess
	breakerFailure
)

// breaker is the one circuit-breaker state machine. It is a plain value with
// no clock and no lock: callers pass the time and serialise access (a mutex
// in memory, a row lock in Postgres), so every supervisor obeys the same
// transitions.
//
//	closed    --FailureThreshold consecutive failures--> open
//	open      --OpenTimeout elapsed (lazily, on allow)--> half-open
//	half-open --SuccessThreshold successes-->             closed
//	half-open --any failure-->                            open
type breaker struct {
	State     BreakerState
	Failures  int       // consecutive failures while closed
	Successes int       // successes while half-open
	Probes    int       // half-open attempts in flight
	OpenedAt  time.Time // last transition to open
	// Period counts half-open periods, so that a probe admitted in an
	// earlier one cannot release a slot of the current one.
	Period uint64
}

// probe identifies a half-open probe slot; the zero value is no probe.
type probe uint64

// openUntil is when an open breaker turns half-open.
func (b *breaker) openUntil(p BreakerPolicy) time.Time { return b.OpenedAt.Add(p.OpenTimeout) }

// advance applies the lazy open → half-open transition.
func (b *breaker) advance(p BreakerPolicy, now time.Time) {
	if b.State == BreakerOpen && !now.Before(b.openUntil(p)) {
		*b = breaker{State: BreakerHalfOpen, OpenedAt: b.OpenedAt, Period: b.Period + 1}
	}
}

// allow asks whether an attempt may start now. When it may, pr is the
// half-open probe slot it holds (zero when closed), which record must be
// given back. When it may not, retryAt is when to ask again, or zero when
// the answer changes only on another attempt's record (all probe slots
// taken).
func (b *breaker) allow(p BreakerPolicy, now time.Time) (ok bool, pr probe, retryAt time.Time) {
	b.advance(p, now)
	switch b.State {
	case BreakerOpen:
		return false, 0, b.openUntil(p)
	case BreakerHalfOpen:
		if b.Probes >= p.HalfOpenProbes {
			return false, 0, time.Time{}
		}
		b.Probes++
		return true, probe(b.Period), time.Time{}
	}
	return true, 0, time.Time{}
}

// record applies an attempt's result. pr is what allow returned for it.
//
// Only a failure in closed or half-open state moves the breaker to open: a
// failure that lands while it is already open (an attempt that started
// before it opened) does not restart the open timeout. Once OpenTimeout has
// passed the breaker is half-open, and any failure reopens it, whenever the
// attempt started: it is fresh evidence that the endpoint is down.
func (b *breaker) record(p BreakerPolicy, r breakerResult, pr probe, now time.Time) {
	if pr != 0 && uint64(pr) == b.Period && b.State == BreakerHalfOpen && b.Probes > 0 {
		b.Probes--
	}
	b.advance(p, now)
	switch r {
	case breakerSuccess:
		switch b.State {
		case BreakerClosed:
			b.Failures = 0
		case BreakerHalfOpen:
			b.Successes++
			if b.Successes >= p.SuccessThreshold {
				*b = breaker{State: BreakerClosed, Period: b.Period}
			}
		}
	case breakerFailure:
		switch b.State {
		case BreakerClosed:
			b.Failures++
			if b.Failures >= p.FailureThreshold {
				*b = breaker{State: BreakerOpen, OpenedAt: now, Period: b.Period}
			}
		case BreakerHalfOpen:
			*b = breaker{State: BreakerOpen, OpenedAt: now, Period: b.Period}
		}
	}
}

// refuses reports whether the breaker is open now; it takes no probe slot.
func (b *breaker) refuses(p BreakerPolicy, now time.Time) bool {
	b.advance(p, now)
	return b.State == BreakerOpen
}
