package webhook

import "time"

// Clock tells the supervisors the time and wakes them at deadlines. The
// default is the system clock; tests substitute a fake one to drive retries
// and breaker timeouts without sleeping.
//
// Timers take an absolute deadline rather than a duration, so a fake clock
// advanced between reading Now and arming a timer cannot strand a waiter.
type Clock interface {
	// Now returns the current time. Durations between two calls are measured
	// with t2.Sub(t1), so a clock that returns monotonic readings (as
	// time.Now does) makes response times immune to wall-clock steps.
	Now() time.Time
	// TimerAt returns a channel that receives once the clock reaches
	// deadline (at once when it already has) and a function that stops the
	// timer, reporting whether it was still pending.
	TimerAt(deadline time.Time) (c <-chan time.Time, stop func() bool)
}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

func (systemClock) TimerAt(deadline time.Time) (<-chan time.Time, func() bool) {
	t := time.NewTimer(time.Until(deadline))
	return t.C, t.Stop
}
