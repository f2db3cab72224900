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
//	open      --OpenTimeout elapsed (lazily, on room)-->  half-open
//	half-open --SuccessThreshold successes-->             closed
//	half-open --any failure-->                            open
type gate struct {
	State     BreakerState
	Failures  int       // consecutive failures while closed
	Successes int       // successes while half-open
	OpenedAt  time.Time // last transition to open
	// Period counts half-open periods, so that a probe admitted in an
	// earlier one is not counted against the current one's slots.
	Period uint64
	// health is the endpoint's run of failures, which the breaker's
	// transitions (above) leave alone.
	health
}

// health is an endpoint's run of failures since its last 2xx answer: the
// second state machine of the gate, which decides when the endpoint is
// reported failing and when recovered.
//
//	healthy --a breaker failure or a failed delivery--> run begins (FailingSince)
//	run     --FailingDeliveries failed deliveries, or
//	          a failure FailingFor after it began-->    failing (reported once)
//	any     --a 2xx answer-->                           healthy (recovered, if it was failing)
type health struct {
	// FailingSince is when the run began; zero: no run.
	FailingSince time.Time
	// FailedDeliveries counts the deliveries that failed for good in the
	// run.
	FailedDeliveries int
	// Failing reports that the run has been reported.
	Failing bool
}

// record applies a result to the run: r is the attempt's meaning to the
// breaker, failed reports that the delivery failed for good with the
// attempt (completion.failedAtEndpoint).
func (h *health) record(p BreakerPolicy, r breakerResult, failed bool, now time.Time) {
	switch {
	case r == breakerSuccess:
		*h = health{}
		return
	case r != breakerFailure && !failed:
		return // a 429, say: the endpoint answered, and the delivery goes on
	}
	if h.FailingSince.IsZero() {
		h.FailingSince = now.Truncate(time.Microsecond) // as Postgres keeps it, so every pod reports the same
	}
	if failed {
		h.FailedDeliveries++
	}
	if !h.Failing {
		h.Failing = p.FailingDeliveries > 0 && h.FailedDeliveries >= p.FailingDeliveries ||
			p.FailingFor > 0 && now.Sub(h.FailingSince) >= p.FailingFor
	}
}

// probe identifies the half-open period whose probe slot an attempt holds;
// the zero value is no probe.
type probe uint64

// openUntil is when an open breaker turns half-open.
func (b *gate) openUntil(p BreakerPolicy) time.Time { return b.OpenedAt.Add(p.OpenTimeout) }

// advance applies the lazy open → half-open transition.
func (b *gate) advance(p BreakerPolicy, now time.Time) {
	if b.State == BreakerOpen && !now.Before(b.openUntil(p)) {
		*b = gate{State: BreakerHalfOpen, OpenedAt: b.OpenedAt, Period: b.Period + 1, health: b.health}
	}
}

// unlimited is the room of a closed gate.
const unlimited = int(^uint(0) >> 1)

// room is how many attempts may start now for the endpoint. probes is how
// many half-open probes of the period probePeriod are still in flight: the
// store counts them (memory with a counter, Postgres by the running rows of
// that period whose lease is live, so that a dead worker's probe frees its
// slot when its lease runs out), and the gate decides; probes of an earlier
// period hold no slot. A half-open gate admits HalfOpenProbes at a time,
// and each attempt it admits is a probe of the period b.Period; an open one
// admits none until retryAt; a closed one admits any number. When room is
// zero, retryAt is when to ask again, or zero when the answer changes only
// with a probe's result.
func (b *gate) room(p BreakerPolicy, now time.Time, probes int, probePeriod uint64) (n int, retryAt time.Time) {
	b.advance(p, now)
	switch b.State {
	case BreakerOpen:
		return 0, b.openUntil(p)
	case BreakerHalfOpen:
		if probePeriod != b.Period {
			probes = 0
		}
		return max(0, p.HalfOpenProbes-probes), time.Time{}
	}
	return unlimited, time.Time{}
}

// record applies an attempt's result r, and failed, which reports that
// the delivery failed for good (see health.record).
//
// Only a failure in closed or half-open state moves the breaker to open: a
// failure that lands while it is already open (an attempt that started
// before it opened) does not restart the open timeout. Once OpenTimeout has
// passed the breaker is half-open, and any failure reopens it, whenever the
// attempt started: it is fresh evidence that the endpoint is down.
func (b *gate) record(p BreakerPolicy, r breakerResult, failed bool, now time.Time) {
	b.advance(p, now)
	switch r {
	case breakerSuccess:
		switch b.State {
		case BreakerClosed:
			b.Failures = 0
		case BreakerHalfOpen:
			b.Successes++
			if b.Successes >= p.SuccessThreshold {
				*b = gate{State: BreakerClosed, Period: b.Period, health: b.health}
			}
		}
	case breakerFailure:
		switch b.State {
		case BreakerClosed:
			b.Failures++
			if b.Failures >= p.FailureThreshold {
				*b = gate{State: BreakerOpen, OpenedAt: now, Period: b.Period, health: b.health}
			}
		case BreakerHalfOpen:
			*b = gate{State: BreakerOpen, OpenedAt: now, Period: b.Period, health: b.health}
		}
	}
	b.health.record(p, r, failed, now)
}

// clean reports whether b is a closed gate with nothing to remember: as
// if it had no row.
func (b *gate) clean() bool {
	return b.State == BreakerClosed && b.Failures == 0 && b.health == health{}
}

// refuses reports whether the breaker is open now; it takes no probe slot
// and changes nothing (b is a copy): a transition is made, and reported,
// by a claim or a result.
func (b gate) refuses(p BreakerPolicy, now time.Time) bool {
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
