// Package dedupsuite is the behaviour every receive.DedupStore must show,
// run by the tests of each implementation.
package dedupsuite

import (
	"context"
	"crypto/sha256"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/adcpkit/webhook/receive"
)

// Config is what a constructor must give its store.
type Config struct {
	Retention    time.Duration
	PerSenderCap int
}

// Run runs the suite; newStore returns a fresh, empty store, and a second
// one on the same state when the implementation is shared (nil otherwise).
func Run(t *testing.T, newStore func(t *testing.T, cfg Config) (receive.DedupStore, receive.DedupStore)) {
	ctx := context.Background()
	t0 := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	fp := sha256.Sum256([]byte(`{"a":1}`))
	other := sha256.Sum256([]byte(`{"a":2}`))
	const lease = time.Minute
	both := func(t *testing.T, cfg Config) (receive.DedupStore, receive.DedupStore) {
		a, b := newStore(t, cfg)
		if b == nil {
			b = a
		}
		return a, b
	}
	claim := func(t *testing.T, s receive.DedupStore, sender, key string, f [32]byte, now time.Time) receive.DedupClaim {
		t.Helper()
		c, err := s.Claim(ctx, sender, key, f, now, lease)
		require.NoError(t, err)
		return c
	}

	t.Run("OneOwnerThenDuplicatesThenConflicts", func(t *testing.T) {
		a, b := both(t, Config{})
		c := claim(t, a, "seller", "key-1", fp, t0)
		require.Equal(t, receive.DedupFirst, c.Verdict)
		require.Equal(t, receive.DedupInProgress, claim(t, b, "seller", "key-1", fp, t0.Add(time.Second)).Verdict)
		require.Equal(t, receive.DedupConflict, claim(t, b, "seller", "key-1", other, t0).Verdict, "changed payload while in progress")
		require.NoError(t, a.Complete(ctx, c, t0.Add(2*time.Second)))
		require.Equal(t, receive.DedupCompleted, claim(t, b, "seller", "key-1", fp, t0.Add(time.Hour)).Verdict)
		require.Equal(t, receive.DedupConflict, claim(t, b, "seller", "key-1", other, t0.Add(time.Hour)).Verdict)
		require.Equal(t, receive.DedupFirst, claim(t, b, "other-seller", "key-1", other, t0).Verdict, "senders are separate keyspaces")
	})
	t.Run("ReleaseLetsTheRetryRunAndKeepsTheBinding", func(t *testing.T) {
		a, b := both(t, Config{})
		c := claim(t, a, "seller", "key-1", fp, t0)
		require.NoError(t, a.Release(ctx, c, t0.Add(time.Second)))
		require.Equal(t, receive.DedupConflict, claim(t, b, "seller", "key-1", other, t0.Add(time.Second)).Verdict,
			"the key stays bound to its first payload")
		c2 := claim(t, b, "seller", "key-1", fp, t0.Add(time.Second))
		require.Equal(t, receive.DedupFirst, c2.Verdict, "the handler failed: the retry runs it")
		require.NotEqual(t, c.Token, c2.Token)
		require.NoError(t, a.Release(ctx, c, t0.Add(2*time.Second)), "a stale owner's release does nothing")
		require.Equal(t, receive.DedupInProgress, claim(t, a, "seller", "key-1", fp, t0.Add(2*time.Second)).Verdict)
		require.ErrorIs(t, a.Complete(ctx, c, t0.Add(2*time.Second)), receive.ErrNotOwner)
	})
	t.Run("LeaseMustBePositive", func(t *testing.T) {
		a, _ := both(t, Config{})
		for _, lease := range []time.Duration{0, -time.Second} {
			_, err := a.Claim(ctx, "seller", "key-1", fp, t0, lease)
			require.Error(t, err, "a zero lease would give two owners")
		}
	})
	t.Run("TheCapFreesWhatRetentionForgets", func(t *testing.T) {
		a, b := both(t, Config{PerSenderCap: 2})
		for _, k := range []string{"k1", "k2"} {
			c := claim(t, a, "seller", k, fp, t0)
			require.NoError(t, a.Complete(ctx, c, t0))
		}
		require.Equal(t, receive.DedupOverCap, claim(t, b, "seller", "k3", fp, t0.Add(time.Hour)).Verdict)
		require.Equal(t, receive.DedupFirst, claim(t, b, "seller", "k3", fp, t0.Add(receive.DedupRetentionMin)).Verdict,
			"with no purge run, the sender is not locked out once its bindings may be forgotten")
	})
	t.Run("ALapsedOwnerIsTakenOver", func(t *testing.T) {
		a, b := both(t, Config{})
		c := claim(t, a, "seller", "key-1", fp, t0)
		c2 := claim(t, b, "seller", "key-1", fp, t0.Add(lease))
		require.Equal(t, receive.DedupFirst, c2.Verdict)
		require.ErrorIs(t, a.Complete(ctx, c, t0.Add(lease)), receive.ErrNotOwner, "the lapsed owner's completion is not the new owner's")
		require.Equal(t, receive.DedupInProgress, claim(t, a, "seller", "key-1", fp, t0.Add(lease+time.Second)).Verdict)
		require.NoError(t, b.Complete(ctx, c2, t0.Add(lease+time.Second)))
		require.Equal(t, receive.DedupCompleted, claim(t, a, "seller", "key-1", fp, t0.Add(lease+2*time.Second)).Verdict)
	})
	t.Run("RetentionAtLeast24h", func(t *testing.T) {
		a, b := both(t, Config{Retention: time.Hour}) // raised to the floor
		c := claim(t, a, "seller", "key-1", fp, t0)
		require.NoError(t, a.Complete(ctx, c, t0))
		require.Equal(t, receive.DedupCompleted, claim(t, b, "seller", "key-1", fp, t0.Add(receive.DedupRetentionMin-time.Second)).Verdict)
		require.Equal(t, receive.DedupFirst, claim(t, b, "seller", "key-1", other, t0.Add(receive.DedupRetentionMin)).Verdict, "forgotten after retention")
	})
	t.Run("PerSenderCap", func(t *testing.T) {
		a, b := both(t, Config{PerSenderCap: 2})
		require.Equal(t, receive.DedupFirst, claim(t, a, "seller", "k1", fp, t0).Verdict)
		require.Equal(t, receive.DedupFirst, claim(t, b, "seller", "k2", fp, t0).Verdict)
		require.Equal(t, receive.DedupOverCap, claim(t, a, "seller", "k3", fp, t0).Verdict)
		require.Equal(t, receive.DedupInProgress, claim(t, a, "seller", "k1", fp, t0).Verdict, "known keys are still answered")
		require.Equal(t, receive.DedupFirst, claim(t, a, "another", "k3", fp, t0).Verdict)
	})
	t.Run("ConcurrentClaimsHaveOneOwner", func(t *testing.T) {
		a, b := both(t, Config{})
		var mu sync.Mutex
		got := map[receive.DedupVerdict]int{}
		var wg sync.WaitGroup
		for i := range 20 {
			s := a
			if i%2 == 1 {
				s = b
			}
			wg.Go(func() {
				c, err := s.Claim(ctx, "seller", "key-1", fp, t0, lease)
				require.NoError(t, err)
				mu.Lock()
				got[c.Verdict]++
				mu.Unlock()
			})
		}
		wg.Wait()
		require.Equal(t, map[receive.DedupVerdict]int{receive.DedupFirst: 1, receive.DedupInProgress: 19}, got)
	})
}
