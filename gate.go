package webhook

import "time"

// breakerResult is what an attempt means to its breaker.
type breakerResult int

const (
	breakerNeutral breakerResult = iota // the endpoint answered, but not 2xx (429, 4xx)
	breakerSuccess
	breakerFailure
)

// gate is the endpoint gate: the one state machine that decides whether an
// attempt may start for an endpoint (its breaker key) and what an attempt's
// result does to the endpoint's circuit breaker. It is a plain value with no
// clock and no lock: callers pass the time and serialise access (a mutex in
// memory; in Postgres a row version that every write compares and bumps),
// so every supervisor obeys the same transitions, and storage only loads
// and persists them.
//
//	closed    --FailureThreshold consecutive failures--> open
//	open      --OpenTimeout elapsed (lazily, on allow)--> half-open
//	half-open --SuccessThreshold successes-->             closed
//	half-open --any failure-->                            open
type gate struct {
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
func (b *gate) openUntil(p BreakerPolicy) time.Time { return b.OpenedAt.Add(p.OpenTimeout) }

// advance applies the lazy open → half-open transition.
func (b *gate) advance(p BreakerPolicy, now time.Time) {
	if b.State == BreakerOpen && !now.Before(b.openUntil(p)) {
		*b = gate{State: BreakerHalfOpen, OpenedAt: b.OpenedAt, Period: b.Period + 1}
	}
}

// allow asks whether an attempt may start now. When it may, pr is the
// half-open probe slot it holds (zero when closed), which record must be
// given back. When it may not, retryAt is when to ask again, or zero when
// the answer changes only on another attempt's record (all probe slots
// taken).
func (b *gate) allow(p BreakerPolicy, now time.Time) (ok bool, pr probe, retryAt time.Time) {
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
func (b *gate) record(p BreakerPolicy, r breakerResult, pr probe, now time.Time) {
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
				*b = gate{State: BreakerClosed, Period: b.Period}
			}
		}
	case breakerFailure:
		switch b.State {
		case BreakerClosed:
			b.Failures++
			if b.Failures >= p.FailureThreshold {
				*b = gate{State: BreakerOpen, OpenedAt: now, Period: b.Period}
			}
		case BreakerHalfOpen:
			*b = gate{State: BreakerOpen, OpenedAt: now, Period: b.Period}
		}
	}
}

// refuses reports whether the breaker is open now; it takes no probe slot.
func (b *gate) refuses(p BreakerPolicy, now time.Time) bool {
	b.advance(p, now)
	return b.State == BreakerOpen
}

// retryAt is when an open gate lets a probe through; zero unless open.
// Stores persist it so that their queries compare times instead of
// re-deriving the open timeout.
func (b *gate) retryAt(p BreakerPolicy) time.Time {
	if b.State != BreakerOpen {
		return time.Time{}
	}
	return b.openUntil(p)
}
