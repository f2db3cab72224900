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
	// FailingDeliveriesDefault and FailingForDefault are when an endpoint
	// is reported failing ([HealthEndpointFailing]).
	FailingDeliveriesDefault = 5
	FailingForDefault        = 15 * time.Minute
	// RuleOff, as BreakerPolicy.FailingDeliveries or FailingFor, turns
	// that rule off.
	RuleOff = -1
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

	// An endpoint's run of failures begins with a failed attempt (one
	// the breaker counts) or a delivery that fails for good, and ends
	// with its next 2xx answer. The run is reported once, as
	// [HealthEndpointFailing], when FailingDeliveries deliveries have
	// failed for good in it, or when a failure comes FailingFor or more
	// after it began; its end is then reported as
	// [HealthEndpointRecovered]. Nothing is disabled: what to do is the
	// seller's call. They default to 5 and 15 minutes; RuleOff turns
	// either rule off.
	FailingDeliveries int
	FailingFor        time.Duration
}

func (p BreakerPolicy) withDefaults() BreakerPolicy {
	p.FailureThreshold = cmp.Or(p.FailureThreshold, FailureThresholdDefault)
	p.SuccessThreshold = cmp.Or(p.SuccessThreshold, SuccessThresholdDefault)
	p.OpenTimeout = cmp.Or(p.OpenTimeout, OpenTimeoutDefault)
	p.HalfOpenProbes = cmp.Or(p.HalfOpenProbes, HalfOpenProbesDefault)
	p.FailingDeliveries = cmp.Or(p.FailingDeliveries, FailingDeliveriesDefault)
	p.FailingFor = cmp.Or(p.FailingFor, FailingForDefault)
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
	case p.FailingDeliveries < RuleOff:
		return badConfig(prefix+"FailingDeliveries", "is %d; use 1 or more, 0 for %d, or RuleOff", p.FailingDeliveries, FailingDeliveriesDefault)
	case p.FailingFor < RuleOff:
		return badConfig(prefix+"FailingFor", "is %v; use a positive duration, 0 for %v, or RuleOff", p.FailingFor, FailingForDefault)
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
