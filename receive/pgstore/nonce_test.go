package pgstore_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/adcpkit/webhook"
	"github.com/adcpkit/webhook/internal/pgtest"
	"github.com/adcpkit/webhook/receive"
	"github.com/adcpkit/webhook/receive/pgstore"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// store makes a nonce store on a fresh database, with its schema, and
// returns it with a second store on the same tables: another pod.
func stores(t *testing.T, cfg pgstore.NonceConfig) (*pgstore.NonceStore, *pgstore.NonceStore) {
	t.Helper()
	pool := pgtest.New(t)
	a, err := pgstore.NewNonceStore(pool, cfg)
	require.NoError(t, err)
	require.NoError(t, a.CreateSchema(context.Background()))
	require.NoError(t, a.CreateSchema(context.Background()), "idempotent")
	b, err := pgstore.NewNonceStore(pool, cfg)
	require.NoError(t, err)
	return a, b
}

var t0 = time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)

func TestNonceReplayAcrossPods(t *testing.T) {
	t.Parallel()
	a, b := stores(t, pgstore.NonceConfig{})
	ctx := context.Background()
	exp := t0.Add(6 * time.Minute)
	v, err := a.Use(ctx, "seller-1", "n1", exp, t0)
	require.NoError(t, err)
	require.Equal(t, receive.NonceFresh, v)
	v, err = b.Use(ctx, "seller-1", "n1", exp, t0.Add(time.Second))
	require.NoError(t, err)
	require.Equal(t, receive.NonceReplayed, v, "another pod sees the nonce")
	v, err = b.Use(ctx, "seller-2", "n1", exp, t0)
	require.NoError(t, err)
	require.Equal(t, receive.NonceFresh, v, "nonces are per keyid")
	// Once expired, the pair may be used again.
	v, err = b.Use(ctx, "seller-1", "n1", exp.Add(6*time.Minute), exp)
	require.NoError(t, err)
	require.Equal(t, receive.NonceFresh, v)
}

func TestNonceCapsAcrossPods(t *testing.T) {
	t.Parallel()
	a, b := stores(t, pgstore.NonceConfig{PerKeyCap: 3, AggregateCap: 5})
	ctx := context.Background()
	exp := t0.Add(5 * time.Minute)
	for i, s := range []*pgstore.NonceStore{a, b, a} {
		v, err := s.Use(ctx, "k1", fmt.Sprint("n", i), exp, t0)
		require.NoError(t, err)
		require.Equal(t, receive.NonceFresh, v)
	}
	over, err := b.OverCap(ctx, "k1", t0)
	require.NoError(t, err)
	require.True(t, over)
	v, err := b.Use(ctx, "k1", "n9", exp, t0)
	require.NoError(t, err)
	require.Equal(t, receive.NonceOverCap, v, "refused, not evicted")
	v, err = a.Use(ctx, "k1", "n0", exp, t0)
	require.NoError(t, err)
	require.Equal(t, receive.NonceReplayed, v, "a replay is still a replay at the cap")
	// The aggregate cap: two more keys' nonces fill it.
	for _, k := range []string{"k2", "k3"} {
		v, err := a.Use(ctx, k, "x", exp, t0)
		require.NoError(t, err)
		require.Equal(t, receive.NonceFresh, v)
	}
	v, err = a.Use(ctx, "k4", "x", exp, t0)
	require.NoError(t, err)
	require.Equal(t, receive.NonceOverCap, v)
	// Expiry frees the key at its cap (lazily), and Purge frees the rest.
	over, err = a.OverCap(ctx, "k1", exp)
	require.NoError(t, err)
	require.False(t, over, "its nonces expired")
	v, err = b.Use(ctx, "k1", "n10", exp.Add(5*time.Minute), exp)
	require.NoError(t, err)
	require.Equal(t, receive.NonceFresh, v, "at its cap, a keyid forgets its own expired nonces")
	n, err := b.Purge(ctx, exp)
	require.NoError(t, err)
	require.EqualValues(t, 2, n, "k2's and k3's: k1 forgot its own")
	v, err = a.Use(ctx, "k4", "x", exp.Add(5*time.Minute), exp)
	require.NoError(t, err)
	require.Equal(t, receive.NonceFresh, v)
}

// Concurrent pods: one nonce is fresh exactly once, and a cap admits
// exactly its number of distinct nonces.
func TestNonceConcurrentPods(t *testing.T) {
	t.Parallel()
	a, b := stores(t, pgstore.NonceConfig{PerKeyCap: 5})
	ctx := context.Background()
	exp := t0.Add(5 * time.Minute)
	count := func(nonce func(i int) string) map[receive.NonceVerdict]int {
		var mu sync.Mutex
		got := map[receive.NonceVerdict]int{}
		var wg sync.WaitGroup
		for i := range 20 {
			s := a
			if i%2 == 1 {
				s = b
			}
			wg.Go(func() {
				v, err := s.Use(ctx, "k", nonce(i), exp, t0)
				require.NoError(t, err)
				mu.Lock()
				got[v]++
				mu.Unlock()
			})
		}
		wg.Wait()
		return got
	}
	require.Equal(t, map[receive.NonceVerdict]int{receive.NonceFresh: 1, receive.NonceReplayed: 19}, count(func(int) string { return "same" }))
	require.Equal(t, map[receive.NonceVerdict]int{receive.NonceFresh: 4, receive.NonceOverCap: 16}, count(func(i int) string { return fmt.Sprint("n", i) }))
}

// Two verifiers ("pods") sharing the store: a signed webhook accepted by
// one is a replay at the other.
func TestVerifiersShareTheStore(t *testing.T) {
	t.Parallel()
	a, b := stores(t, pgstore.NonceConfig{})
	v1, v2 := verifier(t, a), verifier(t, b)
	req := signedRequest(t)
	_, err := v1.Verify(context.Background(), req.method, req.url, req.header, req.body)
	require.NoError(t, err)
	_, err = v2.Verify(context.Background(), req.method, req.url, req.header, req.body)
	var ve *receive.VerifyError
	require.ErrorAs(t, err, &ve)
	require.Equal(t, receive.CodeReplayed, ve.Code)
}

func TestNewNonceStoreRejectsBadConfig(t *testing.T) {
	t.Parallel()
	_, err := pgstore.NewNonceStore(nil, pgstore.NonceConfig{})
	require.Error(t, err)
	pool := pgtest.New(t)
	_, err = pgstore.NewNonceStore(pool, pgstore.NonceConfig{Table: "Bad-Name"})
	require.ErrorContains(t, err, "NonceConfig.Table")
	_, err = pgstore.NewNonceStore(pool, pgstore.NonceConfig{PerKeyCap: -1})
	require.Error(t, err)
}

// A signed webhook, signed by the seller's side (the root package: only
// this external test imports it).
type signed struct {
	method, url string
	header      http.Header
	body        []byte
}

var sellerKey = func() *webhook.SigningKey {
	k, err := webhook.GenerateSigningKey("seller-2026", "")
	if err != nil {
		panic(err)
	}
	return k
}()

func signedRequest(t *testing.T) signed {
	t.Helper()
	signer, err := webhook.NewRFC9421Signer(webhook.SignerConfig{Key: sellerKey})
	require.NoError(t, err)
	body := []byte(`{"idempotency_key":"whk_0123456789abcdef"}`)
	r, err := http.NewRequest(http.MethodPost, "https://buyer.example/hook", nil)
	require.NoError(t, err)
	require.NoError(t, signer.Sign(r, body))
	return signed{r.Method, r.URL.String(), r.Header, body}
}

func verifier(t *testing.T, nonces receive.NonceStore) *receive.Verifier {
	t.Helper()
	v, err := receive.NewVerifier(receive.VerifierConfig{Keys: []receive.VerifyingKey{sellerKey.VerifyingKey()}, Nonces: nonces})
	require.NoError(t, err)
	return v
}
