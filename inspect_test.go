package webhook_test

import (
	"context"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/adcpkit/webhook"
	"github.com/adcpkit/webhook/internal/pgtest"
)

// runInspectorSuite: both supervisors answer an operator's questions the
// same way.
func runInspectorSuite(t *testing.T, newSup newSupervisorFunc) {
	t.Run("LookupsAgree", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, newSup, func(c *suiteConfig) { c.Breaker.FailureThreshold = 3 })
		in := e.sup.(webhook.Inspector)
		ctx := context.Background()
		url := "https://buyer.example/flaky"
		e.sender.on(url, step{status: 503}, step{status: 500})
		e.startWorker()
		r := e.sendMCP(mcp(url, "t1"))
		as := e.deliverAll(1)
		require.Len(t, as, 3)
		d := e.settled(r.ID)
		got, err := in.Delivery(ctx, r.ID)
		require.NoError(t, err)
		require.Equal(t, d, got)
		require.Equal(t, webhook.StateDelivered, got.State)
		require.Equal(t, 3, got.Attempts)

		rec, err := in.Attempts(ctx, r.ID)
		require.NoError(t, err)
		require.Len(t, rec, 3)
		for i := range rec {
			require.Equal(t, i+1, rec[i].AttemptNumber)
			require.Equal(t, as[i].Outcome, rec[i].Outcome)
			require.Equal(t, as[i].HTTPStatus, rec[i].HTTPStatus)
			require.Equal(t, as[i].OccurredAt, rec[i].OccurredAt)
			require.Equal(t, r.IdempotencyKey, rec[i].IdempotencyKey)
		}

		st, err := in.Breaker(ctx, url)
		require.NoError(t, err)
		require.Equal(t, webhook.BreakerClosed, st, "a success reset it")
		st, err = in.Breaker(ctx, "https://never.example/used")
		require.NoError(t, err)
		require.Equal(t, webhook.BreakerClosed, st)

		other := e.sendMCP(mcp("https://buyer.example/later", "t2"))
		e.attempts(1)
		e.settled(other.ID)
		rec, err = in.Attempts(ctx, other.ID)
		require.NoError(t, err)
		require.Len(t, rec, 1, "each delivery's own records")
		require.Equal(t, other.ID, rec[0].DeliveryID)
		require.Equal(t, webhook.OutcomeSuccess, rec[0].Outcome)

		for _, id := range []string{"999999", "no-such-id"} {
			_, err = in.Delivery(ctx, id)
			require.ErrorIs(t, err, webhook.ErrNotFound, id)
			_, err = in.Attempts(ctx, id)
			require.ErrorIs(t, err, webhook.ErrNotFound, id)
			_, err = in.Redeliver(ctx, id)
			require.ErrorIs(t, err, webhook.ErrNotFound, id)
		}
	})
}

func TestMemoryInspector(t *testing.T) {
	t.Parallel()
	runInspectorSuite(t, newMemory)
}

func TestPostgresInspector(t *testing.T) {
	t.Parallel()
	runInspectorSuite(t, newPostgres)
}

// waiter is what both supervisors offer to block until a delivery is final.
type waiter interface {
	Wait(ctx context.Context, id string) (webhook.Delivery, error)
}

func runWaitSuite(t *testing.T, newSup newSupervisorFunc) {
	t.Run("WaitReturnsTheFinalState", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, newSup, func(c *suiteConfig) { c.Retry.MaxAttempts = 1 })
		w := e.sup.(waiter)
		ctx := context.Background()
		url := "https://buyer.example/hook"
		e.sender.on(url, step{status: 400})
		r := e.sendMCP(mcp(url, "t1"))

		// No worker yet: a wait whose context ends returns its error, and
		// the snapshot as last read (Postgres reads nothing once the
		// context has ended). The deadline leaves a loaded machine ample
		// time for the first read (30 ms did not, once, in CI).
		short, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		d, err := w.Wait(short, r.ID)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.Equal(t, webhook.StatePending, d.State)

		e.startWorker()
		d, err = w.Wait(ctx, r.ID)
		require.NoError(t, err)
		require.Equal(t, webhook.StateFailed, d.State)
		require.Equal(t, 1, d.Attempts)
		_, err = w.Wait(ctx, "999999")
		require.ErrorIs(t, err, webhook.ErrNotFound)
	})
}

func TestMemoryWait(t *testing.T) {
	t.Parallel()
	runWaitSuite(t, newMemory)
}

func TestPostgresWait(t *testing.T) {
	t.Parallel()
	runWaitSuite(t, newPostgres)
}

// inspector is the supervisor under test as an operator sees it.
func (e *env) inspector() webhook.Inspector { return e.sup.(webhook.Inspector) }

// ids lists the deliveries' IDs.
func ids(ds []webhook.Delivery) []string {
	var out []string
	for _, d := range ds {
		out = append(out, d.ID)
	}
	return out
}

// listAll pages through every delivery f selects, limit at a time.
func listAll(t *testing.T, in webhook.Inspector, f webhook.DeliveryFilter, limit int) []webhook.Delivery {
	t.Helper()
	var out []webhook.Delivery
	p := webhook.Page{Limit: limit}
	for range 100 {
		l, err := in.Deliveries(context.Background(), f, p)
		require.NoError(t, err)
		require.LessOrEqual(t, len(l.Deliveries), limit)
		out = append(out, l.Deliveries...)
		if l.Next == "" {
			return out
		}
		require.Len(t, l.Deliveries, limit, "a page before the last is full")
		p.After = l.Next
	}
	t.Fatal("pagination did not end")
	return nil
}

func runInspectorListSuite(t *testing.T, newSup newSupervisorFunc) {
	t.Run("FilteredKeysetPages", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, newSup, func(c *suiteConfig) { c.Retry.MaxAttempts = 1 })
		in := e.inspector()
		ctx := context.Background()
		good, bad := "https://buyer.example/good", "https://buyer.example/bad"
		e.sender.on(bad, step{status: 400}, step{status: 400}, step{status: 400})
		e.startWorker()
		var rs []webhook.Receipt
		for i, u := range []string{good, bad, good, bad, good, bad} {
			w := mcp(u, "task"+strconv.Itoa(i%2))
			if i >= 4 {
				w.NotificationType = "scheduled"
				w.BreakerKey = "tenant-b"
			}
			rs = append(rs, e.sendMCP(w))
			e.attempts(1)
			e.settled(rs[i].ID)
			e.clock.Advance(time.Minute)
		}
		newest := func(is ...int) []string {
			var out []string
			for j := len(is) - 1; j >= 0; j-- {
				out = append(out, rs[is[j]].ID)
			}
			return out
		}

		for _, limit := range []int{1, 2, 4, 6, 1000} {
			all := listAll(t, in, webhook.DeliveryFilter{}, limit)
			require.Equal(t, newest(0, 1, 2, 3, 4, 5), ids(all), "limit %d", limit)
		}
		l, err := in.Deliveries(ctx, webhook.DeliveryFilter{}, webhook.Page{})
		require.NoError(t, err)
		require.Empty(t, l.Next)
		for _, d := range l.Deliveries {
			require.Nil(t, d.Body, "a list carries no bodies")
			full, err := in.Delivery(ctx, d.ID)
			require.NoError(t, err)
			require.NotEmpty(t, full.Body)
			full.Body = nil
			require.Equal(t, full, d, "a listed delivery is its snapshot without the body")
		}
		require.Equal(t, "scheduled", l.Deliveries[0].NotificationType)
		require.Equal(t, epoch, l.Deliveries[5].FirstAttemptAt)

		for name, tc := range map[string]struct {
			f    webhook.DeliveryFilter
			want []string
		}{
			"failed":     {webhook.DeliveryFilter{State: webhook.StateFailed}, newest(1, 3, 5)},
			"delivered":  {webhook.DeliveryFilter{State: webhook.StateDelivered}, newest(0, 2, 4)},
			"pending":    {webhook.DeliveryFilter{State: webhook.StatePending}, nil},
			"url":        {webhook.DeliveryFilter{URL: bad}, newest(1, 3, 5)},
			"breaker":    {webhook.DeliveryFilter{BreakerKey: good}, newest(0, 2)},
			"tenant":     {webhook.DeliveryFilter{BreakerKey: "tenant-b"}, newest(4, 5)},
			"task":       {webhook.DeliveryFilter{TaskID: "task1"}, newest(1, 3, 5)},
			"type":       {webhook.DeliveryFilter{NotificationType: "scheduled"}, newest(4, 5)},
			"after":      {webhook.DeliveryFilter{AcceptedAfter: epoch.Add(2 * time.Minute)}, newest(2, 3, 4, 5)},
			"before":     {webhook.DeliveryFilter{AcceptedBefore: epoch.Add(2 * time.Minute)}, newest(0, 1)},
			"range":      {webhook.DeliveryFilter{AcceptedAfter: epoch.Add(time.Minute), AcceptedBefore: epoch.Add(3 * time.Minute)}, newest(1, 2)},
			"combined":   {webhook.DeliveryFilter{State: webhook.StateFailed, TaskID: "task1", URL: bad, AcceptedBefore: epoch.Add(4 * time.Minute)}, newest(1, 3)},
			"no such":    {webhook.DeliveryFilter{URL: "https://nobody.example/"}, nil},
			"wrong task": {webhook.DeliveryFilter{TaskID: "task0", URL: bad}, nil},
		} {
			got := listAll(t, in, tc.f, 2)
			require.Equal(t, tc.want, ids(got), name)
		}

		for name, tc := range map[string]struct {
			f     webhook.DeliveryFilter
			p     webhook.Page
			field string
		}{
			"state":  {webhook.DeliveryFilter{State: "lost"}, webhook.Page{}, "DeliveryFilter.State"},
			"range":  {webhook.DeliveryFilter{AcceptedAfter: epoch, AcceptedBefore: epoch}, webhook.Page{}, "DeliveryFilter.AcceptedBefore"},
			"limit":  {webhook.DeliveryFilter{}, webhook.Page{Limit: 1001}, "Page.Limit"},
			"neg":    {webhook.DeliveryFilter{}, webhook.Page{Limit: -1}, "Page.Limit"},
			"cursor": {webhook.DeliveryFilter{}, webhook.Page{After: "not-a-cursor"}, "Page.After"},
			"long":   {webhook.DeliveryFilter{URL: strings.Repeat("x", 9000)}, webhook.Page{}, "DeliveryFilter.URL"},
		} {
			_, err := in.Deliveries(ctx, tc.f, tc.p)
			var ve *webhook.ValidationError
			require.ErrorAs(t, err, &ve, name)
			require.Equal(t, tc.field, ve.Field, name)
			require.ErrorIs(t, err, webhook.ErrInvalidWebhook, name)
		}
	})

	t.Run("StatsCountStatesAndTheBacklog", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, newSup, func(c *suiteConfig) {
			c.Retry.MaxAttempts = 1
			c.Breaker.FailureThreshold = 1
		})
		in := e.inspector()
		ctx := context.Background()
		st, err := in.Stats(ctx)
		require.NoError(t, err)
		require.Equal(t, webhook.Stats{}, st, "an empty supervisor")

		down, fine := "https://buyer.example/down", "https://buyer.example/fine"
		e.sender.on(down, step{status: 503})
		e.startWorker()
		failed := e.sendMCP(mcp(down, "t1")) // opens down's breaker
		e.attempts(1)
		e.settled(failed.ID)
		delivered := e.sendMCP(mcp(fine, "t2"))
		e.attempts(1)
		e.settled(delivered.ID)
		st, err = in.Stats(ctx)
		require.NoError(t, err)
		require.Equal(t, webhook.Stats{Delivered: 1, Failed: 1, OpenBreakers: 1}, st)
	})

	t.Run("StatsBacklogWithoutWorkers", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, newSup)
		in := e.inspector()
		e.sendMCP(mcp("https://buyer.example/a", "t1"))
		e.clock.Advance(3 * time.Second)
		e.sendMCP(mcp("https://buyer.example/b", "t2"))
		e.clock.Advance(2 * time.Second)
		st, err := in.Stats(context.Background())
		require.NoError(t, err)
		require.Equal(t, webhook.Stats{Pending: 2, Due: 2, OldestDueAt: epoch, OldestDueAge: 5 * time.Second}, st)
	})

	t.Run("BreakersListAndReset", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, newSup, func(c *suiteConfig) {
			c.Breaker.FailureThreshold = 2
			c.Retry.MaxAttempts = 1
		})
		in := e.inspector()
		ctx := context.Background()
		urls := []string{"https://a.example/h", "https://b.example/h", "https://c.example/h"}
		for _, u := range urls {
			e.sender.on(u, step{status: 503}, step{status: 503})
		}
		e.startWorker()
		for _, u := range urls[:2] {
			for i := range 2 {
				r := e.sendMCP(mcp(u, "t"+strconv.Itoa(i)))
				e.attempts(1)
				e.settled(r.ID)
			}
		}
		r := e.sendMCP(mcp(urls[2], "t"))
		e.attempts(1)
		e.settled(r.ID)

		l, err := in.Breakers(ctx, webhook.Page{})
		require.NoError(t, err)
		require.Empty(t, l.Next)
		require.Len(t, l.Breakers, 3)
		for i, b := range l.Breakers[:2] {
			require.Equal(t, webhook.BreakerInfo{Key: urls[i], State: webhook.BreakerOpen,
				OpenedAt: epoch, ProbeAt: epoch.Add(webhook.OpenTimeoutDefault), FailingSince: epoch, FailedDeliveries: 2}, b)
		}
		require.Equal(t, webhook.BreakerInfo{Key: urls[2], State: webhook.BreakerClosed, Failures: 1, FailingSince: epoch, FailedDeliveries: 1}, l.Breakers[2])
		page, err := in.Breakers(ctx, webhook.Page{Limit: 2})
		require.NoError(t, err)
		require.Equal(t, l.Breakers[:2], page.Breakers)
		require.Equal(t, urls[1], page.Next)
		page, err = in.Breakers(ctx, webhook.Page{Limit: 2, After: page.Next})
		require.NoError(t, err)
		require.Equal(t, l.Breakers[2:], page.Breakers)
		require.Empty(t, page.Next)

		// A webhook for an open breaker waits; a reset sends it at once,
		// with no clock movement to a probe.
		waiting := e.sendMCP(mcp(urls[0], "after"))
		e.sender.on(urls[0]) // healthy again
		require.NoError(t, in.ResetBreaker(ctx, urls[0]))
		require.Equal(t, webhook.OutcomeSuccess, e.attempts(1)[0].Outcome)
		require.Equal(t, webhook.StateDelivered, e.settled(waiting.ID).State)
		st, err := in.Breaker(ctx, urls[0])
		require.NoError(t, err)
		require.Equal(t, webhook.BreakerClosed, st)
		require.NoError(t, in.ResetBreaker(ctx, urls[2]), "closed with failures: cleared")
		require.NoError(t, in.ResetBreaker(ctx, "https://never.example/"), "a key never seen: nothing to do")
		l, err = in.Breakers(ctx, webhook.Page{})
		require.NoError(t, err)
		// urls[0] answered 2xx: clean. urls[2]'s reset leaves its run of
		// failures, which only a 2xx ends.
		require.Len(t, l.Breakers, 2)
		require.Equal(t, urls[1], l.Breakers[0].Key)
		require.Equal(t, webhook.BreakerInfo{Key: urls[2], State: webhook.BreakerClosed, FailingSince: epoch, FailedDeliveries: 1}, l.Breakers[1])
		require.Contains(t, e.logs.String(), `msg="webhook: circuit breaker reset by an operator" breaker_key=https://a.example/h from=open`)
	})

	t.Run("RedeliverMatching", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, newSup, func(c *suiteConfig) { c.Retry.MaxAttempts = 1 })
		in := e.inspector()
		ctx := context.Background()
		a, b := "https://a.example/h", "https://b.example/h"
		e.sender.on(a, step{status: 400}, step{status: 400}, step{status: 400}, step{status: 409})
		e.sender.on(b, step{status: 400})
		e.startWorker()
		var rs []webhook.Receipt
		for i, u := range []string{a, a, a, b} {
			rs = append(rs, e.sendMCP(mcp(u, "t"+strconv.Itoa(i))))
			e.attempts(1)
			e.settled(rs[i].ID)
		}
		// A fourth delivery to a, answered 409, must be re-emitted.
		conflict := e.sendMCP(mcp(a, "t9"))
		e.attempts(1)
		e.settled(conflict.ID)
		delivered := e.sendMCP(mcp(a, "ok"))
		e.attempts(1)
		e.settled(delivered.ID)

		_, err := in.RedeliverMatching(ctx, webhook.DeliveryFilter{State: webhook.StateDelivered}, webhook.BulkOptions{})
		var ve *webhook.ValidationError
		require.ErrorAs(t, err, &ve)
		require.Equal(t, "DeliveryFilter.State", ve.Field)
		_, err = in.RedeliverMatching(ctx, webhook.DeliveryFilter{}, webhook.BulkOptions{BatchSize: 5000})
		require.ErrorAs(t, err, &ve)
		require.Equal(t, "BulkOptions.BatchSize", ve.Field)

		f := webhook.DeliveryFilter{BreakerKey: a}
		res, err := in.RedeliverMatching(ctx, f, webhook.BulkOptions{DryRun: true})
		require.NoError(t, err)
		require.Equal(t, webhook.BulkResult{Matched: 4, Redelivered: 3, Reemitted: 1, Newest: conflict.ID}, res)
		d, err := in.Delivery(ctx, rs[0].ID)
		require.NoError(t, err)
		require.Equal(t, webhook.StateFailed, d.State, "a dry run changes nothing")
		require.Len(t, e.sender.sent(), 6)

		// Two at a time, newest first: the 409 (re-emitted) and rs[2].
		res, err = in.RedeliverMatching(ctx, f, webhook.BulkOptions{Limit: 2, BatchSize: 1})
		require.NoError(t, err)
		require.Equal(t, 2, res.Matched)
		require.Equal(t, 1, res.Redelivered)
		require.Equal(t, 1, res.Reemitted)
		require.Len(t, res.Receipts, 2)
		require.Equal(t, conflict.ID, res.Receipts[0].ReemissionOf)
		require.NotEqual(t, conflict.IdempotencyKey, res.Receipts[0].IdempotencyKey)
		require.Equal(t, rs[2].ID, res.Receipts[1].ID)
		require.Equal(t, rs[2].IdempotencyKey, res.Receipts[1].IdempotencyKey)
		e.attempts(2)
		for _, r := range res.Receipts {
			require.Equal(t, webhook.StateDelivered, e.settled(r.ID).State)
		}

		// The rest, past the horizon: re-emitted under fresh keys. The
		// re-emitted 409 is not matched again.
		e.clock.Advance(25 * time.Hour)
		res, err = in.RedeliverMatching(ctx, f, webhook.BulkOptions{BatchSize: 1})
		require.NoError(t, err)
		require.Equal(t, 2, res.Matched)
		require.Equal(t, 2, res.Reemitted)
		require.Equal(t, []string{rs[1].ID, rs[0].ID}, []string{res.Receipts[0].ReemissionOf, res.Receipts[1].ReemissionOf})
		e.attempts(2)
		res, err = in.RedeliverMatching(ctx, f, webhook.BulkOptions{})
		require.NoError(t, err)
		require.Equal(t, webhook.BulkResult{}, res, "nothing left")
		d, err = in.Delivery(ctx, rs[3].ID)
		require.NoError(t, err)
		require.Equal(t, webhook.StateFailed, d.State, "b was not selected")

		// A prepared body past its horizon is skipped, not fatal.
		e.sender.on(b, step{status: 400}) // before it is sent: a worker is running
		p, err := e.sup.SendPrepared(ctx, webhook.PreparedWebhook{URL: b,
			Body: []byte(`{"idempotency_key":"evt_0123456789abcdef"}`), IdempotencyKey: "evt_0123456789abcdef"})
		require.NoError(t, err)
		e.attempts(1)
		require.Equal(t, webhook.StateFailed, e.settled(p.ID).State)
		e.clock.Advance(25 * time.Hour)
		res, err = in.RedeliverMatching(ctx, webhook.DeliveryFilter{URL: b}, webhook.BulkOptions{DryRun: true})
		require.NoError(t, err)
		require.Equal(t, webhook.BulkResult{Matched: 2, Reemitted: 1, Skipped: 1, Newest: p.ID}, res)
		res, err = in.RedeliverMatching(ctx, webhook.DeliveryFilter{URL: b}, webhook.BulkOptions{})
		require.NoError(t, err)
		require.Equal(t, 2, res.Matched)
		require.Equal(t, 1, res.Reemitted)
		require.Equal(t, 1, res.Skipped)
		require.Equal(t, rs[3].ID, res.Receipts[0].ReemissionOf)

		// A confirmed run bound to a dry run's Newest leaves alone what
		// failed since.
		e.attempts(1) // the re-emission above
		e.settled(res.Receipts[0].ID)
		c := "https://c.example/h"
		e.sender.on(c, step{status: 400}, step{status: 400})
		before := e.sendMCP(mcp(c, "before"))
		e.attempts(1)
		e.settled(before.ID)
		dry, err := in.RedeliverMatching(ctx, webhook.DeliveryFilter{URL: c}, webhook.BulkOptions{DryRun: true})
		require.NoError(t, err)
		require.Equal(t, webhook.BulkResult{Matched: 1, Redelivered: 1, Newest: before.ID}, dry)
		after := e.sendMCP(mcp(c, "later")) // fails after the dry run
		e.attempts(1)
		e.settled(after.ID)
		res, err = in.RedeliverMatching(ctx, webhook.DeliveryFilter{URL: c}, webhook.BulkOptions{Newest: dry.Newest, Limit: dry.Matched})
		require.NoError(t, err)
		require.Len(t, res.Receipts, 1)
		require.Equal(t, before.ID, res.Receipts[0].ID, "the delivery the dry run counted")
		_, err = in.RedeliverMatching(ctx, webhook.DeliveryFilter{URL: b}, webhook.BulkOptions{Newest: "nope"})
		require.ErrorAs(t, err, &ve)
		require.Equal(t, "BulkOptions.Newest", ve.Field)
	})

	t.Run("Purge", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, newSup, func(c *suiteConfig) { c.Retry.MaxAttempts = 1 })
		in := e.inspector()
		ctx := context.Background()
		url := "https://buyer.example/h"
		e.sender.on(url, step{status: 400})
		e.startWorker()
		failed := e.sendMCP(mcp(url, "t1"))
		e.attempts(1)
		e.settled(failed.ID)
		e.clock.Advance(time.Hour)
		delivered := e.sendMCP(mcp(url, "t2"))
		e.attempts(1)
		e.settled(delivered.ID)
		n, err := in.Purge(ctx, epoch)
		require.NoError(t, err)
		require.Zero(t, n, "nothing finished before the epoch")
		n, err = in.Purge(ctx, epoch.Add(time.Minute))
		require.NoError(t, err)
		require.EqualValues(t, 1, n)
		_, err = in.Delivery(ctx, failed.ID)
		require.ErrorIs(t, err, webhook.ErrNotFound)
		_, err = in.Attempts(ctx, failed.ID)
		require.ErrorIs(t, err, webhook.ErrNotFound)
		_, err = in.Delivery(ctx, delivered.ID)
		require.NoError(t, err)
		st, err := in.Stats(ctx)
		require.NoError(t, err)
		require.Equal(t, webhook.Stats{Delivered: 1}, st)
		// The purged key is free again.
		w := mcp(url, "t1")
		w.IdempotencyKey = failed.IdempotencyKey
		again := e.sendMCP(w)
		require.NotEqual(t, failed.ID, again.ID)
	})

	// A breaker is kept under its real key, even when the key is a URL
	// whose loggable form differs (a query, a token-shaped segment):
	// attempt records show the loggable form, the gate uses the key.
	t.Run("BreakerOfAURLWithAQuery", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, newSup, func(c *suiteConfig) {
			c.Retry.MaxAttempts = 1
			c.Breaker.FailureThreshold = 3
		})
		in := e.inspector()
		ctx := context.Background()
		url := "https://buyer.example/hook?sig=0123456789abcdef"
		t.Cleanup(func() {
			if t.Failed() {
				t.Log(e.logs.String())
			}
		})
		e.sender.on(url, step{status: 503}, step{status: 503}, step{status: 503})
		e.startWorker()
		for i := range 3 {
			r := e.sendMCP(mcp(url, "t"+strconv.Itoa(i)))
			a := e.attempts(1)[0]
			require.Equal(t, "https://buyer.example/hook", a.BreakerKey, "the record shows the loggable form")
			e.settled(r.ID)
			l, err := in.Breakers(ctx, webhook.Page{})
			require.NoError(t, err)
			require.Len(t, l.Breakers, 1, "one breaker, under the real key: %+v", l.Breakers)
			require.Equal(t, url, l.Breakers[0].Key)
			if i < 2 {
				require.Equal(t, i+1, l.Breakers[0].Failures, "each failure counted once")
			}
		}
		st, err := in.Breaker(ctx, url)
		require.NoError(t, err)
		require.Equal(t, webhook.BreakerOpen, st, "three failures opened it")
	})

	// A failed delivery whose last record the sink is still taking is
	// redelivered (the memory supervisor waits for the sink), as the dry
	// run said it would be.
	t.Run("BulkWhileTheSinkReports", func(t *testing.T) {
		t.Parallel()
		sink := &gatedSink{got: make(chan webhook.Attempt, 10), release: make(chan struct{})}
		e := newEnv(t, newSup, func(c *suiteConfig) {
			c.Retry.MaxAttempts = 1
			c.Retry.SinkTimeout = time.Minute
			c.Sink = sink
		})
		in := e.inspector()
		ctx := context.Background()
		url := "https://buyer.example/h"
		e.sender.on(url, step{status: 400})
		e.startWorker()
		t.Cleanup(sink.open)
		r := e.sendMCP(mcp(url, "t1"))
		<-sink.got // the final record is with the (slow) sink
		require.Eventually(t, func() bool {
			d, err := in.Delivery(ctx, r.ID)
			return err == nil && d.State == webhook.StateFailed
		}, guard, time.Millisecond)
		dry, err := in.RedeliverMatching(ctx, webhook.DeliveryFilter{URL: url}, webhook.BulkOptions{DryRun: true})
		require.NoError(t, err)
		require.Equal(t, webhook.BulkResult{Matched: 1, Redelivered: 1, Newest: r.ID}, dry)
		go func() { // the sink returns after a while
			time.Sleep(20 * time.Millisecond)
			sink.open()
		}()
		res, err := in.RedeliverMatching(ctx, webhook.DeliveryFilter{URL: url}, webhook.BulkOptions{})
		require.NoError(t, err)
		require.Equal(t, 1, res.Redelivered, "%+v", res)
	})

	// A sink that redelivers the failure it is told of gets a receipt at
	// once (the memory supervisor queues the delivery when the sink
	// returns), and the delivery is then sent again.
	t.Run("RedeliverFromTheSink", func(t *testing.T) {
		t.Parallel()
		var in webhook.Inspector
		got := make(chan webhook.Attempt, 10)
		redelivered := make(chan error, 1)
		e := newEnv(t, newSup, func(c *suiteConfig) {
			c.Retry.MaxAttempts = 1
			c.Retry.SinkTimeout = time.Minute // longer than guard: a wait on itself would fail the test
			c.Sink = webhook.LogSinkFunc(func(ctx context.Context, a webhook.Attempt) error {
				if a.Outcome == webhook.OutcomeFailure {
					_, err := in.Redeliver(ctx, a.DeliveryID)
					redelivered <- err
				}
				got <- a
				return nil
			})
		})
		in = e.inspector()
		url := "https://buyer.example/h"
		e.sender.on(url, step{status: 400})
		e.startWorker()
		r := e.sendMCP(mcp(url, "t1"))
		select {
		case err := <-redelivered:
			require.NoError(t, err)
		case <-time.After(guard):
			t.Fatal("Redeliver from the sink did not return")
		}
		for _, want := range []webhook.Outcome{webhook.OutcomeFailure, webhook.OutcomeSuccess} {
			select {
			case a := <-got:
				require.Equal(t, want, a.Outcome)
				require.Equal(t, r.ID, a.DeliveryID)
			case <-time.After(guard):
				t.Fatalf("no %s record", want)
			}
		}
	})

	// Breakers are listed in byte order by both, whatever the database's
	// collation (see TestPostgresBreakerOrderUnderICU).
	t.Run("BreakerOrder", func(t *testing.T) {
		t.Parallel()
		runBreakerOrder(t, newEnv(t, newSup, func(c *suiteConfig) { c.Retry.MaxAttempts = 1 }))
	})

	t.Run("WithoutASender", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, newSup, func(c *suiteConfig) { c.Sender = nil })
		in := e.inspector()
		err := e.sup.RunWorker(context.Background())
		require.ErrorIs(t, err, webhook.ErrNilSender)
		require.Contains(t, err.Error(), "HTTPSender")
		r := e.sendMCP(mcp("https://buyer.example/h", "t1"))
		l, err := in.Deliveries(context.Background(), webhook.DeliveryFilter{State: webhook.StatePending}, webhook.Page{})
		require.NoError(t, err)
		require.Equal(t, []string{r.ID}, ids(l.Deliveries))
	})
}

func TestMemoryInspectorLists(t *testing.T) {
	t.Parallel()
	runInspectorListSuite(t, newMemory)
}

func TestPostgresInspectorLists(t *testing.T) {
	t.Parallel()
	runInspectorListSuite(t, newPostgres)
}

// gatedSink holds every record until it is opened.
type gatedSink struct {
	got     chan webhook.Attempt
	release chan struct{}
	once    sync.Once
}

func (s *gatedSink) RecordAttempt(_ context.Context, a webhook.Attempt) error {
	s.got <- a
	<-s.release
	return nil
}

func (s *gatedSink) open() { s.once.Do(func() { close(s.release) }) }

func runBreakerOrder(t *testing.T, e *env) {
	t.Helper()
	u := "https://buyer.example/h"
	e.sender.on(u, step{status: 503}, step{status: 503})
	e.startWorker()
	for _, k := range []string{"tenant-a", "tenant-B"} {
		w := mcp(u, k)
		w.BreakerKey = k
		r := e.sendMCP(w)
		e.attempts(1)
		e.settled(r.ID)
	}
	l, err := e.inspector().Breakers(context.Background(), webhook.Page{})
	require.NoError(t, err)
	var keys []string
	for _, b := range l.Breakers {
		keys = append(keys, b.Key)
	}
	require.Equal(t, []string{"tenant-B", "tenant-a"}, keys, "byte order")
}

// On a database whose collation is en-US (ICU), as on a typical
// en_US.UTF-8 host, breakers still list in byte order.
func TestPostgresBreakerOrderUnderICU(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	admin := pgtest.New(t)
	name := fmt.Sprintf("icu_%d", time.Now().UnixNano())
	_, err := admin.Exec(ctx, `CREATE DATABASE `+name+` TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'`)
	require.NoError(t, err)
	u, err := url.Parse(pgtest.URL(t))
	require.NoError(t, err)
	u.Path = "/" + name
	pool, err := pgxpool.New(ctx, u.String())
	require.NoError(t, err)
	t.Cleanup(func() {
		pool.Close()
		_, _ = admin.Exec(context.Background(), `DROP DATABASE `+name+` WITH (FORCE)`)
	})
	runBreakerOrder(t, newEnv(t, func(t *testing.T, cfg suiteConfig) webhook.Supervisor {
		return newPostgresOn(t, pool, cfg, webhook.PostgresConfig{})
	}, func(c *suiteConfig) { c.Retry.MaxAttempts = 1 }))
}
