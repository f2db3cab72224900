package webhook_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/adcpkit/webhook"
	"github.com/adcpkit/webhook/internal/fakeclock"
	"github.com/adcpkit/webhook/receive"
	"github.com/adcpkit/webhook/webhooktest"
)

// Multi-tenant signing on both supervisors, over real HTTP on loopback:
// each tenant's deliveries are signed with that tenant's current key and
// verify against its JWKS and not another tenant's.

func TestTenantSigning(t *testing.T) {
	t.Parallel()
	for name, newSup := range map[string]newSupervisorFunc{"Memory": newMemory, "Postgres": newPostgres} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			t.Run("EachTenantVerifiesWithItsOwnJWKS", func(t *testing.T) { t.Parallel(); testTenantsVerify(t, newSup) })
			t.Run("RotationSignsQueuedDeliveries", func(t *testing.T) { t.Parallel(); testTenantRotation(t, newSup) })
			t.Run("MissingKeyFailsTheDelivery", func(t *testing.T) { t.Parallel(); testTenantKeyMissing(t, newSup) })
			t.Run("UnknownTenantIsRefusedAtAcceptance", func(t *testing.T) { t.Parallel(); testTenantUnknown(t, newSup) })
		})
	}
}

// tenantWorld is one test's sellers and buyers: keys per tenant, a real
// signed HTTPSender, a supervisor, and one receiver.
type tenantWorld struct {
	t     *testing.T
	keys  *webhook.SigningKeys
	clock *fakeclock.Clock
	sink  *recordingSink
	sup   webhook.Supervisor
	rcv   *webhooktest.Receiver
}

func newTenantWorld(t *testing.T, newSup newSupervisorFunc, tenants ...string) *tenantWorld {
	return newTenantWorldWith(t, newSup, webhook.BreakerPolicy{}, tenants...)
}

func newTenantWorldWith(t *testing.T, newSup newSupervisorFunc, breaker webhook.BreakerPolicy, tenants ...string) *tenantWorld {
	t.Helper()
	w := &tenantWorld{t: t, keys: webhook.NewSigningKeys(), clock: fakeclock.New(time.Now()), sink: newRecordingSink()}
	for _, tenant := range tenants {
		w.install(tenant, tenant+"-2026-01")
	}
	signer, err := webhook.NewRFC9421Signer(webhook.SignerConfig{Keys: w.keys})
	require.NoError(t, err)
	sender, err := webhook.NewHTTPSender(webhook.HTTPSenderConfig{Signer: signer, Development: true})
	require.NoError(t, err)
	w.rcv = webhooktest.NewReceiver(webhooktest.Config{})
	t.Cleanup(w.rcv.Close)
	w.sup = newSup(t, suiteConfig{Sender: sender, Retry: webhook.RetryPolicy{NoJitter: true}, Sink: w.sink, Clock: w.clock, Breaker: breaker})
	return w
}

// install gives tenant a fresh Ed25519 key that signs from now on.
func (w *tenantWorld) install(tenant, kid string) *webhook.SigningKey {
	w.t.Helper()
	k, err := webhook.GenerateSigningKey(kid, receive.AlgEd25519)
	require.NoError(w.t, err)
	require.NoError(w.t, w.keys.Set(tenant, k))
	return k
}

// verifier checks signatures against tenant's published JWKS, with a nonce
// store of its own.
func (w *tenantWorld) verifier(tenant string) *receive.Verifier {
	w.t.Helper()
	jwks, err := w.keys.JWKS(tenant)
	require.NoError(w.t, err)
	keys, err := receive.ParseJWKS(jwks)
	require.NoError(w.t, err)
	v, err := receive.NewVerifier(receive.VerifierConfig{Keys: keys})
	require.NoError(w.t, err)
	return v
}

// verify checks d against tenant's JWKS and returns the kid that signed.
func (w *tenantWorld) verify(tenant string, d webhooktest.Delivery) (string, error) {
	sig, err := w.verifier(tenant).Verify(context.Background(), d.Method, w.rcv.URL+d.URI, d.Header, d.Body)
	return sig.KeyID, err
}

func (w *tenantWorld) send(tenant, task string) webhook.Receipt {
	w.t.Helper()
	m := mcp(w.rcv.URL+"/hook/"+task, task)
	m.Tenant = tenant
	r, err := w.sup.SendMCP(context.Background(), m)
	require.NoError(w.t, err)
	return r
}

func (w *tenantWorld) received(n int) []webhooktest.Delivery {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	defer cancel()
	ds, err := w.rcv.WaitFor(ctx, n)
	require.NoError(w.t, err)
	return ds
}

func testTenantsVerify(t *testing.T, newSup newSupervisorFunc) {
	w := newTenantWorld(t, newSup, "acme", "globex", "")
	tenantOf := map[string]string{}
	for _, tenant := range []string{"acme", "globex", "", "acme", "globex"} {
		r := w.send(tenant, "task_"+tenant+"_"+webhook.NewIdempotencyKey()[4:12])
		tenantOf[r.IdempotencyKey] = tenant
	}
	runWorker(t, w.sup)
	for _, d := range w.received(5) {
		tenant := tenantOf[d.IdempotencyKey]
		kid, err := w.verify(tenant, d)
		require.NoError(t, err, "tenant %q's delivery against its own JWKS", tenant)
		require.Equal(t, tenant+"-2026-01", kid)
		for _, other := range []string{"acme", "globex", ""} {
			if other == tenant {
				continue
			}
			_, err := w.verify(other, d)
			var ve *receive.VerifyError
			require.ErrorAs(t, err, &ve, "tenant %q's delivery must not verify against tenant %q's JWKS", tenant, other)
			require.Equal(t, receive.CodeKeyUnknown, ve.Code)
		}
	}
	// The tenant is stored with the delivery and selects it.
	list, err := w.sup.(webhook.Inspector).Deliveries(context.Background(), webhook.DeliveryFilter{Tenant: "acme"}, webhook.Page{})
	require.NoError(t, err)
	require.Len(t, list.Deliveries, 2)
	for _, d := range list.Deliveries {
		require.Equal(t, "acme", d.Tenant)
	}
}

// A tenant's new key signs the queued deliveries' next attempts: a
// delivery whose first attempt (old key) failed is retried with the new
// key, the same bytes and the same idempotency key, and a delivery that
// was waiting is first sent with the new key.
func testTenantRotation(t *testing.T, newSup newSupervisorFunc) {
	w := newTenantWorld(t, newSup, "acme")
	w.rcv.Fail(webhooktest.Fault{Status: 503})
	first := w.send("acme", "task_rotation_a")
	runWorker(t, w.sup)
	got := w.received(1)
	require.Equal(t, 503, got[0].Status)
	kid, err := w.verify("acme", got[0])
	require.NoError(t, err)
	require.Equal(t, "acme-2026-01", kid)
	w.sink.next(t) // the failure is recorded: the retry is scheduled

	// Publish first, then sign: the JWKS holds both keys.
	next, err := webhook.GenerateSigningKey("acme-2026-02", receive.AlgECDSAP256)
	require.NoError(t, err)
	require.NoError(t, w.keys.Publish("acme", next))
	jwks, err := w.keys.JWKS("acme")
	require.NoError(t, err)
	published, err := receive.ParseJWKS(jwks)
	require.NoError(t, err)
	require.Len(t, published, 2)
	require.NoError(t, w.keys.Activate("acme", "acme-2026-02"))

	second := w.send("acme", "task_rotation_b")
	w.clock.Advance(time.Second) // RetryPolicy.BaseDelay: the retry is due
	got = w.received(3)
	byKey := map[string][]webhooktest.Delivery{}
	for _, d := range got {
		byKey[d.IdempotencyKey] = append(byKey[d.IdempotencyKey], d)
	}
	require.Len(t, byKey[first.IdempotencyKey], 2)
	require.Len(t, byKey[second.IdempotencyKey], 1)
	retry := byKey[first.IdempotencyKey][1]
	require.Equal(t, byKey[first.IdempotencyKey][0].Body, retry.Body, "only the signature may change between attempts")
	for _, d := range []webhooktest.Delivery{retry, byKey[second.IdempotencyKey][0]} {
		require.Equal(t, 200, d.Status)
		kid, err := w.verify("acme", d)
		require.NoError(t, err)
		require.Equal(t, "acme-2026-02", kid)
	}
	// Retiring the old key leaves the new one published.
	require.NoError(t, w.keys.Retire("acme", "acme-2026-01"))
	ks := w.keys.Published("acme")
	require.Len(t, ks, 1)
	require.Equal(t, "acme-2026-02", ks[0].KeyID())
}

// A tenant whose key is retired while its delivery waits: the attempt
// fails the delivery with the reason, sends nothing and does not count
// against the endpoint's breaker; the inspection API finds it by tenant,
// and once a key is installed it is redelivered.
func testTenantKeyMissing(t *testing.T, newSup newSupervisorFunc) {
	// A breaker that opens at the first failure it counts: a missing key
	// must not be one.
	w := newTenantWorldWith(t, newSup, webhook.BreakerPolicy{FailureThreshold: 1}, "initech", "acme")
	r := w.send("initech", "task_missing")
	require.NoError(t, w.keys.Retire("initech", "initech-2026-01"))
	runWorker(t, w.sup)
	a := w.sink.next(t)
	require.Equal(t, webhook.OutcomeFailure, a.Outcome)
	require.False(t, a.WillRetry)
	require.Contains(t, a.Error, "no signing key")
	require.Contains(t, a.Error, `"initech"`)

	insp := w.sup.(webhook.Inspector)
	ctx := context.Background()
	d, err := insp.Delivery(ctx, r.ID)
	require.NoError(t, err)
	require.Equal(t, webhook.StateFailed, d.State)
	require.Equal(t, "initech", d.Tenant)
	require.Contains(t, d.LastError, "no signing key")
	require.Empty(t, w.rcv.Deliveries(), "nothing was sent")
	br, err := insp.Breaker(ctx, d.BreakerKey)
	require.NoError(t, err)
	require.Equal(t, webhook.BreakerClosed, br)

	// Another tenant's delivery to the same endpoint goes out meanwhile.
	w.send("acme", "task_missing")
	w.received(1)

	failed, err := insp.Deliveries(ctx, webhook.DeliveryFilter{Tenant: "initech", State: webhook.StateFailed}, webhook.Page{})
	require.NoError(t, err)
	require.Len(t, failed.Deliveries, 1)
	require.Equal(t, r.ID, failed.Deliveries[0].ID)

	w.install("initech", "initech-2026-02")
	res, err := insp.RedeliverMatching(ctx, webhook.DeliveryFilter{Tenant: "initech", State: webhook.StateFailed}, webhook.BulkOptions{})
	require.NoError(t, err)
	require.Equal(t, 1, res.Redelivered)
	got := w.received(2)
	kid, err := w.verify("initech", got[1])
	require.NoError(t, err)
	require.Equal(t, "initech-2026-02", kid)
	require.Equal(t, r.IdempotencyKey, got[1].IdempotencyKey)
}

func testTenantUnknown(t *testing.T, newSup newSupervisorFunc) {
	w := newTenantWorld(t, newSup, "acme")
	ctx := context.Background()
	m := mcp(w.rcv.URL+"/hook", "task_unknown")
	m.Tenant = "umbrella"
	_, err := w.sup.SendMCP(ctx, m)
	var ve *webhook.ValidationError
	require.ErrorAs(t, err, &ve)
	require.Equal(t, "Tenant", ve.Field)
	require.ErrorIs(t, err, webhook.ErrSigningKeyMissing)
	require.ErrorIs(t, err, webhook.ErrInvalidWebhook)
	require.Contains(t, err.Error(), `"umbrella"`)

	// A batch with one unknown tenant accepts nothing.
	ok := mcp(w.rcv.URL+"/hook", "task_known")
	ok.Tenant = "acme"
	_, err = w.sup.SendMCPBatch(ctx, []webhook.MCPWebhook{ok, m})
	require.ErrorIs(t, err, webhook.ErrSigningKeyMissing)
	var be *webhook.BatchError
	require.ErrorAs(t, err, &be)
	require.Equal(t, 1, be.Index)

	list, err := w.sup.(webhook.Inspector).Deliveries(ctx, webhook.DeliveryFilter{}, webhook.Page{})
	require.NoError(t, err)
	require.Empty(t, list.Deliveries, "nothing was stored")

	// Legacy authentication signs with no key: any tenant is accepted.
	m.Authentication = &webhook.Authentication{Scheme: webhook.AuthBearer, Credentials: "bearer-0123456789-abcdefghijklmnopq"}
	_, err = w.sup.SendMCP(ctx, m)
	require.NoError(t, err)
}

// next waits for the sink's next attempt record.
func (s *recordingSink) next(t *testing.T) webhook.Attempt {
	t.Helper()
	select {
	case a := <-s.ch:
		return a
	case <-time.After(guard):
		t.Fatal("no attempt record")
		return webhook.Attempt{}
	}
}
