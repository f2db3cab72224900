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

// Table names the pattern allows work even when they are SQL reserved
// words.
func TestReservedWordTables(t *testing.T) {
	t.Parallel()
	pool := pgtest.New(t)
	ctx := context.Background()
	d, err := pgstore.NewDedupStore(pool, pgstore.DedupConfig{Table: "order"})
	require.NoError(t, err)
	require.NoError(t, d.CreateSchema(ctx))
	c, err := d.Claim(ctx, "seller", "k1", [32]byte{1}, t0, time.Minute)
	require.NoError(t, err)
	require.Equal(t, receive.DedupFirst, c.Verdict)
	_, err = d.Purge(ctx, t0)
	require.NoError(t, err)
	n, err := pgstore.NewNonceStore(pool, pgstore.NonceConfig{Table: "select"})
	require.NoError(t, err)
	require.NoError(t, n.CreateSchema(ctx))
	v, err := n.Use(ctx, "k", "n", t0.Add(time.Minute), t0)
	require.NoError(t, err)
	require.Equal(t, receive.NonceFresh, v)
	_, err = n.OverCap(ctx, "k", t0)
	require.NoError(t, err)
	_, err = n.Purge(ctx, t0.Add(time.Hour))
	require.NoError(t, err)
}
