package fakeclock

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestTimersFireInOrderWhenDue(t *testing.T) {
	t.Parallel()
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c := New(start)
	past, _ := c.TimerAt(start)
	require.Len(t, past, 1, "a deadline already reached fires at once")

	soon, _ := c.TimerAt(start.Add(time.Second))
	later, stopLater := c.TimerAt(start.Add(time.Minute))
	c.Advance(999 * time.Millisecond)
	require.Empty(t, soon)
	c.Advance(time.Millisecond)
	require.Equal(t, start.Add(time.Second), <-soon)
	require.Empty(t, later)
	require.True(t, stopLater())
	c.Set(start.Add(time.Hour))
	require.Empty(t, later, "a stopped timer never fires")
	require.False(t, stopLater())

	c.Set(start) // never backwards
	require.Equal(t, start.Add(time.Hour), c.Now())
}

func TestWaitForTimer(t *testing.T) {
	t.Parallel()
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c := New(start)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	require.False(t, c.WaitForTimer(ctx, func(time.Time) bool { return true }), "no timer: gives up when ctx ends")

	go c.TimerAt(start.Add(time.Minute))
	require.True(t, c.WaitForTimer(context.Background(), func(d time.Time) bool { return d.Equal(start.Add(time.Minute)) }))
}
