package pgstore_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/adcpkit/webhook/internal/dedupsuite"
	"github.com/adcpkit/webhook/internal/pgtest"
	"github.com/adcpkit/webhook/receive"
	"github.com/adcpkit/webhook/receive/pgstore"
)

// The suite every DedupStore passes, with two stores on one database as
// two pods.
func TestPostgresDedupStore(t *testing.T) {
	t.Parallel()
	dedupsuite.Run(t, func(t *testing.T, cfg dedupsuite.Config) (receive.DedupStore, receive.DedupStore) {
		pool := pgtest.New(t)
		c := pgstore.DedupConfig{Retention: cfg.Retention, PerSenderCap: cfg.PerSenderCap}
		a, err := pgstore.NewDedupStore(pool, c)
		require.NoError(t, err)
		require.NoError(t, a.CreateSchema(context.Background()))
		b, err := pgstore.NewDedupStore(pool, c)
		require.NoError(t, err)
		return a, b
	})
}

func TestPostgresDedupPurge(t *testing.T) {
	t.Parallel()
	pool := pgtest.New(t)
	s, err := pgstore.NewDedupStore(pool, pgstore.DedupConfig{PerSenderCap: 2})
	require.NoError(t, err)
	ctx := context.Background()
	require.NoError(t, s.CreateSchema(ctx))
	fp := [32]byte{1}
	c, err := s.Claim(ctx, "seller", "k1", fp, t0, time.Minute)
	require.NoError(t, err)
	require.NoError(t, s.Complete(ctx, c, t0))
	_, err = s.Claim(ctx, "seller", "k2", fp, t0, time.Minute) // abandoned by its owner
	require.NoError(t, err)
	end := t0.Add(receive.DedupRetentionMin + time.Minute) // the abandoned claim's lease plus retention
	n, err := s.Purge(ctx, end.Add(-time.Second))
	require.NoError(t, err)
	require.EqualValues(t, 1, n, "the completed binding only")
	n, err = s.Purge(ctx, end)
	require.NoError(t, err)
	require.EqualValues(t, 1, n, "then the abandoned claim")
	// The sender's count went down with them: its cap admits two again.
	for _, k := range []string{"k3", "k4"} {
		c, err := s.Claim(ctx, "seller", k, fp, end, time.Minute)
		require.NoError(t, err)
		require.Equal(t, receive.DedupFirst, c.Verdict)
	}
	_, err = pgstore.NewDedupStore(pool, pgstore.DedupConfig{Table: "Bad"})
	require.ErrorContains(t, err, "DedupConfig.Table")
}
