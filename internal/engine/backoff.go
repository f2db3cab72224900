package engine

import (
	"context"
	"time"
)

// Backoff paces retries through trouble (a database that cannot be
// reached, say): it doubles from 100ms to 5s. The zero value is ready.
type Backoff struct{ d time.Duration }

const (
	backoffFirst = 100 * time.Millisecond
	backoffMost  = 5 * time.Second
)

// Peek returns the delay the next call to Next returns.
func (b *Backoff) Peek() time.Duration { return max(b.d, backoffFirst) }

// Next returns the delay before the next retry and doubles the one after.
func (b *Backoff) Next() time.Duration {
	d := b.Peek()
	b.d = min(2*d, backoffMost)
	return d
}

// Reset starts again from the shortest delay, after a success.
func (b *Backoff) Reset() { b.d = 0 }

// Sleep sleeps for d or until ctx is done, reporting whether it slept.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
