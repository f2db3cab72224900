package webhook

import (
	"context"
	"errors"
	"net/http"
	"time"
)

// Inspector is the operator's view of a supervisor, the same on both: look
// a delivery and its attempts up, list and count deliveries, see and reset
// breakers, send failed deliveries again (one, or every one a filter
// selects), purge finished ones, and read AdCP activity records. The CLI
// (cmd/webhookctl) and the dashboard (webhookui) use nothing else.
//
// Every method takes a context. Errors match [ErrNotFound] for an unknown
// delivery and [ErrInvalidWebhook] (a [*ValidationError] naming the field)
// for a bad filter or page. A supervisor made without a [Sender] inspects
// and accepts, but cannot run workers: an operator's CLI or dashboard
// process delivers nothing.
type Inspector interface {
	// Delivery returns a snapshot of one delivery.
	Delivery(ctx context.Context, id string) (Delivery, error)
	// Attempts returns a delivery's attempt records in order.
	Attempts(ctx context.Context, id string) ([]Attempt, error)
	// Wait blocks until a delivery is delivered or failed.
	Wait(ctx context.Context, id string) (Delivery, error)
	// Deliveries lists the deliveries f selects, newest first, one page
	// at a time. Listed deliveries have no Body: [Inspector.Delivery] has
	// it.
	Deliveries(ctx context.Context, f DeliveryFilter, p Page) (DeliveryList, error)
	// Stats counts deliveries by state and measures the backlog.
	Stats(ctx context.Context) (Stats, error)
	// Breaker returns the state of one breaker (closed for a key never
	// seen).
	Breaker(ctx context.Context, key string) (BreakerState, error)
	// Breakers lists the breakers that are open, half-open, or closed with
	// failures counted or in a run of failures (BreakerInfo.FailingSince),
	// by key, one page at a time.
	Breakers(ctx context.Context, p Page) (BreakerList, error)
	// ResetBreaker closes a breaker and makes its pending deliveries due
	// now. Resetting a breaker that is closed with no failures counted
	// does nothing. The endpoint's run of failures is left alone: its
	// next 2xx answer ends it.
	ResetBreaker(ctx context.Context, key string) error
	// Redeliver sends one failed delivery again, following AdCP 3.2's
	// retry-horizon and 409 rules (see [MemorySupervisor.Redeliver]).
	Redeliver(ctx context.Context, id string) (Receipt, error)
	// RedeliverMatching redelivers every failed delivery f selects; see
	// [BulkOptions].
	RedeliverMatching(ctx context.Context, f DeliveryFilter, o BulkOptions) (BulkResult, error)
	// Purge deletes delivered and failed deliveries that finished before
	// before, with their attempt records, and returns how many it
	// deleted. A purged delivery's idempotency key is free again: purging
	// inside the retry horizon ends AdCP 3.2's payload binding early.
	Purge(ctx context.Context, before time.Time) (int64, error)
	// Activity returns AdCP webhook_activity[] records.
	Activity(ctx context.Context, q ActivityQuery) ([]ActivityRecord, error)
}

// Both supervisors are Inspectors.
var (
	_ Inspector = (*MemorySupervisor)(nil)
	_ Inspector = (*PostgresSupervisor)(nil)
)

// DeliveryFilter selects deliveries. Every field set must match; the zero
// value selects every delivery.
type DeliveryFilter struct {
	// State is the delivery's state, or "" for any.
	State DeliveryState
	// URL is the exact destination URL.
	URL string
	// BreakerKey is the exact breaker key (Routing.BreakerKey, else the
	// URL): every delivery to one endpoint, or one tenant's.
	BreakerKey string
	// TaskID is the exact task ID.
	TaskID string
	// NotificationType is the exact Routing.NotificationType.
	NotificationType string
	// Tenant is the exact Routing.Tenant: one tenant's deliveries (with
	// State failed, those that failed while its signing key was missing,
	// to redeliver once it is installed).
	Tenant string
	// AcceptedAfter and AcceptedBefore bound when deliveries were
	// accepted: at or after AcceptedAfter, and before AcceptedBefore.
	// Zero means no bound.
	AcceptedAfter, AcceptedBefore time.Time
}

// check validates f.
func (f DeliveryFilter) check() error {
	switch f.State {
	case "", StatePending, StateRunning, StateDelivered, StateFailed:
	default:
		return invalid("DeliveryFilter.State", "is %q; use pending, running, delivered, failed or leave it empty", f.State)
	}
	for _, t := range []struct{ field, v string }{
		{"DeliveryFilter.URL", f.URL}, {"DeliveryFilter.BreakerKey", f.BreakerKey},
		{"DeliveryFilter.TaskID", f.TaskID}, {"DeliveryFilter.NotificationType", f.NotificationType},
		{"DeliveryFilter.Tenant", f.Tenant},
	} {
		if len(t.v) > maxFilterText {
			return invalid(t.field, "is %d bytes; no stored value is longer than %d", len(t.v), maxFilterText)
		}
	}
	if !f.AcceptedAfter.IsZero() && !f.AcceptedBefore.IsZero() && !f.AcceptedAfter.Before(f.AcceptedBefore) {
		return invalid("DeliveryFilter.AcceptedBefore", "is not after AcceptedAfter; the range would be empty")
	}
	return nil
}

// maxFilterText bounds a filter's text: longer than any stored URL or key.
const maxFilterText = 8192

// matches reports whether d passes f.
func (f *DeliveryFilter) matches(d *Delivery) bool {
	return (f.State == "" || d.State == f.State) &&
		(f.URL == "" || d.URL == f.URL) &&
		(f.BreakerKey == "" || d.BreakerKey == f.BreakerKey) &&
		(f.TaskID == "" || d.TaskID == f.TaskID) &&
		(f.NotificationType == "" || d.NotificationType == f.NotificationType) &&
		(f.Tenant == "" || d.Tenant == f.Tenant) &&
		(f.AcceptedAfter.IsZero() || !d.AcceptedAt.Before(f.AcceptedAfter)) &&
		(f.AcceptedBefore.IsZero() || d.AcceptedAt.Before(f.AcceptedBefore))
}

// Page is one page of a keyset-paginated list.
type Page struct {
	// After is the Next of the previous page; "" for the first page.
	After string
	// Limit is the most items to return: 1 to [PageLimitMax], 0 for
	// [PageLimitDefault].
	Limit int
}

// Page limits.
const (
	PageLimitDefault = 50
	PageLimitMax     = 1000
)

// limit validates p and returns its limit.
func (p Page) limit() (int, error) {
	switch {
	case p.Limit == 0:
		return PageLimitDefault, nil
	case p.Limit < 0 || p.Limit > PageLimitMax:
		return 0, invalid("Page.Limit", "is %d; use 1 to %d, or 0 for %d", p.Limit, PageLimitMax, PageLimitDefault)
	}
	return p.Limit, nil
}

// badCursor is the error for a Page.After that no list returned.
func badCursor(after string) error {
	return invalid("Page.After", "is %q, which is not a cursor this supervisor returned; pass a page's Next, or \"\" for the first page", after)
}

// DeliveryList is one page of deliveries.
type DeliveryList struct {
	// Deliveries are newest first (by acceptance order), without Body.
	Deliveries []Delivery
	// Next is the Page.After of the next page, or "" when this is the
	// last.
	Next string
}

// Stats is a supervisor's queue at one moment.
type Stats struct {
	// Deliveries in each state (finished ones as long as they are kept).
	Pending, Running, Delivered, Failed int64
	// Due counts the pending deliveries whose next attempt is due now and
	// whose breaker is closed: the backlog the workers have not reached.
	Due int64
	// OldestDueAt is when the longest-waiting of those fell due (zero when
	// none is due); OldestDueAge is how long ago that was, by the
	// supervisor's clock.
	OldestDueAt  time.Time
	OldestDueAge time.Duration
	// OpenBreakers counts breakers that are open or half-open.
	OpenBreakers int64
}

// BreakerInfo is one breaker as [Inspector.Breakers] lists it.
type BreakerInfo struct {
	// Key is the breaker key: a Routing.BreakerKey, or a URL.
	Key string
	// State is the breaker's state now.
	State BreakerState
	// Failures counts the consecutive failures of a closed breaker, which
	// open it at BreakerPolicy.FailureThreshold (opening resets it).
	Failures int
	// OpenedAt is when it last opened; zero if it never did.
	OpenedAt time.Time
	// ProbeAt is when an open breaker lets a probe through (it becomes
	// half-open); zero otherwise.
	ProbeAt time.Time
	// FailingSince is when the endpoint's run of failures began (its
	// first failure since its last 2xx answer); zero when its last answer
	// was a 2xx. FailedDeliveries counts the deliveries that failed for
	// good since then, and Failing reports that the run was reported as
	// [HealthEndpointFailing] (see BreakerPolicy.FailingDeliveries).
	FailingSince     time.Time
	FailedDeliveries int
	Failing          bool
}

// Resettable reports whether [Inspector.ResetBreaker] has anything to do
// for b: it is open, half-open or counting failures. (A breaker listed
// only for its endpoint's run of failures is closed already; the run ends
// with a 2xx.)
func (b BreakerInfo) Resettable() bool { return b.State != BreakerClosed || b.Failures > 0 }

// BreakerList is one page of breakers.
type BreakerList struct {
	// Breakers are in key order.
	Breakers []BreakerInfo
	// Next is the Page.After of the next page, or "" when this is the
	// last.
	Next string
}

// info is g's BreakerInfo at now under policy p.
func (g gate) info(key string, p BreakerPolicy, now time.Time) BreakerInfo {
	g.advance(p, now)
	i := BreakerInfo{Key: key, State: g.State, Failures: g.Failures, FailedDeliveries: g.FailedDeliveries, Failing: g.Failing}
	if !g.FailingSince.IsZero() {
		i.FailingSince = g.FailingSince.UTC()
	}
	if !g.OpenedAt.IsZero() {
		i.OpenedAt = g.OpenedAt.UTC()
	}
	if g.State == BreakerOpen {
		i.ProbeAt = g.retryAt(p).UTC()
	}
	return i
}

// listed reports whether a breaker is worth listing: not closed and clean
// (and the Postgres breakers statement's condition).
func (g *gate) listed() bool {
	return g.State != BreakerClosed || g.Failures > 0 || !g.FailingSince.IsZero()
}

// BulkOptions bound [Inspector.RedeliverMatching].
type BulkOptions struct {
	// DryRun counts what would be redelivered, and changes nothing.
	DryRun bool
	// Limit is the most deliveries to redeliver; 0 means every one the
	// filter selects.
	Limit int
	// BatchSize is how many deliveries are read per page, between which
	// ctx is checked: 1 to [PageLimitMax], 0 for 100. Each delivery is
	// redelivered in its own short transaction, so workers keep running.
	BatchSize int
	// Newest, when set, is a dry run's BulkResult.Newest: deliveries newer
	// than it are left alone, so that a confirmed run (with Limit the dry
	// run's Matched) redelivers what the dry run counted, not deliveries
	// that failed since.
	Newest string
}

// BulkResult is what [Inspector.RedeliverMatching] did, or would do.
type BulkResult struct {
	// Matched counts the failed, not yet re-emitted deliveries the filter
	// selected (up to Limit).
	Matched int
	// Redelivered counts those queued again under their own key (within
	// the horizon); in a dry run, those that would be.
	Redelivered int
	// Reemitted counts those re-emitted under a fresh key (past the
	// horizon, or after a 409); in a dry run, those that would be.
	Reemitted int
	// Skipped counts those that could not be: a SendPrepared body past
	// its horizon ([ErrReemitPrepared]), or a delivery another operator
	// redelivered meanwhile.
	Skipped int
	// Receipts are the receipts of the deliveries queued, in the order
	// they were redelivered (none in a dry run).
	Receipts []Receipt
	// Newest is the ID of the newest delivery matched, for
	// BulkOptions.Newest; "" when none was.
	Newest string
}

// bulkBatchDefault is BulkOptions.BatchSize's default.
const bulkBatchDefault = 100

// candidate is a failed delivery a bulk redelivery may send again.
type candidate struct {
	id       string
	anchor   time.Time // where its horizon counts from
	status   int       // its last HTTP status
	prepared bool      // a SendPrepared body: it cannot be re-emitted
}

// bulkSource is what redeliverMatching needs of a supervisor.
type bulkSource interface {
	// candidates lists the failed deliveries f selects that were not
	// re-emitted, newest first, after the cursor after; it returns the
	// next cursor ("" at the end).
	candidates(ctx context.Context, f DeliveryFilter, after string, limit int) ([]candidate, string, error)
	Redeliver(ctx context.Context, id string) (Receipt, error)
	// through returns the cursor whose page starts with the delivery id
	// (and goes on to older ones).
	through(id string) (string, error)
}

// redeliverMatching is RedeliverMatching for both supervisors: it pages
// through the failed deliveries f selects, newest first, and redelivers
// each in turn. Deliveries accepted after it starts (its own re-emissions
// among them) are newer than the first page, so it never sees them.
func redeliverMatching(ctx context.Context, k *core, src bulkSource, f DeliveryFilter, o BulkOptions) (BulkResult, error) {
	var res BulkResult
	if f.State != "" && f.State != StateFailed {
		return res, invalid("DeliveryFilter.State", "is %q; only failed deliveries can be redelivered (leave it empty, or use failed)", f.State)
	}
	f.State = StateFailed
	if err := f.check(); err != nil {
		return res, err
	}
	batch := o.BatchSize
	switch {
	case o.Limit < 0:
		return res, invalid("BulkOptions.Limit", "is %d; use 0 for no limit", o.Limit)
	case batch == 0:
		batch = bulkBatchDefault
	case batch < 0 || batch > PageLimitMax:
		return res, invalid("BulkOptions.BatchSize", "is %d; use 1 to %d, or 0 for %d", batch, PageLimitMax, bulkBatchDefault)
	}
	after := ""
	if o.Newest != "" {
		c, err := src.through(o.Newest)
		if err != nil {
			return res, invalid("BulkOptions.Newest", "is %q, which is not a delivery ID of this supervisor; pass a dry run's BulkResult.Newest", o.Newest)
		}
		after = c
	}
	for {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		n := batch
		if o.Limit > 0 {
			n = min(n, o.Limit-res.Matched)
		}
		cs, next, err := src.candidates(ctx, f, after, n)
		if err != nil {
			return res, err
		}
		for _, c := range cs {
			res.Matched++
			if res.Newest == "" {
				res.Newest = c.id
			}
			if o.DryRun {
				reemit := k.pastHorizon(c.anchor, k.clock.Now()) || c.status == http.StatusConflict
				switch {
				case reemit && c.prepared:
					res.Skipped++
				case reemit:
					res.Reemitted++
				default:
					res.Redelivered++
				}
				continue
			}
			r, err := src.Redeliver(ctx, c.id)
			switch {
			case errors.Is(err, ErrReemitPrepared), errors.Is(err, ErrNotFailed), errors.Is(err, ErrNotFound):
				res.Skipped++
			case err != nil:
				return res, err
			case r.ReemissionOf == c.id:
				res.Reemitted++
				res.Receipts = append(res.Receipts, r)
			default:
				res.Redelivered++
				res.Receipts = append(res.Receipts, r)
			}
		}
		if next == "" || o.Limit > 0 && res.Matched >= o.Limit {
			return res, nil
		}
		after = next
	}
}
