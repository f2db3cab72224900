package webhook

import (
	"context"
	"errors"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
)

// The PostgresSupervisor's Inspector methods beyond single lookups.

// Deliveries lists the deliveries f selects, newest first (by ID),
// without their bodies. Each filter is an equality or range on a column;
// a filter that no index serves (a URL among many finished deliveries,
// say) scans the table from its newest row until it fills the page. See
// [Inspector].
func (s *PostgresSupervisor) Deliveries(ctx context.Context, f DeliveryFilter, p Page) (DeliveryList, error) {
	limit, err := p.limit()
	if err != nil {
		return DeliveryList{}, err
	}
	rows, next, err := s.list(ctx, f, p.After, limit)
	if err != nil {
		return DeliveryList{}, err
	}
	out := DeliveryList{Deliveries: make([]Delivery, len(rows)), Next: next}
	for i := range rows {
		out.Deliveries[i] = rows[i].delivery()
	}
	return out, nil
}

// list reads the rows f selects below the cursor after, newest first, at
// most limit, and returns the next cursor.
func (s *PostgresSupervisor) list(ctx context.Context, f DeliveryFilter, after string, limit int) ([]snapshotRow, string, error) {
	if err := f.check(); err != nil {
		return nil, "", err
	}
	var where []string
	var args []any
	add := func(cond string, v any) {
		args = append(args, v)
		where = append(where, strings.ReplaceAll(cond, "$", "$"+strconv.Itoa(len(args))))
	}
	if after != "" {
		n, err := strconv.ParseInt(after, 10, 64)
		if err != nil || n <= 0 {
			return nil, "", badCursor(after)
		}
		add("d.id < $", n)
	}
	if f.State != "" {
		// A literal (f.check allowed only the four states), so that a
		// generic plan still matches the partial indexes on state.
		where = append(where, "d.state = '"+string(f.State)+"'")
	}
	for _, c := range []struct{ col, v string }{
		{"url", f.URL}, {"breaker_key", f.BreakerKey},
		{"task_id", f.TaskID}, {"notification_type", f.NotificationType}, {"tenant", f.Tenant},
	} {
		if c.v != "" {
			add("d."+c.col+" = $", c.v)
		}
	}
	if !f.AcceptedAfter.IsZero() {
		add("d.accepted_at >= $", f.AcceptedAfter)
	}
	if !f.AcceptedBefore.IsZero() {
		add("d.accepted_at < $", f.AcceptedBefore)
	}
	sql := s.q.list
	if len(where) > 0 {
		sql += " WHERE " + strings.Join(where, " AND ")
	}
	args = append(args, limit+1)
	sql += " ORDER BY d.id DESC LIMIT $" + strconv.Itoa(len(args))
	rows, err := collect[snapshotRow](s.db.Query(ctx, sql, args...))
	if err != nil {
		return nil, "", dbError("deliveries", err)
	}
	next := ""
	if len(rows) > limit {
		rows = rows[:limit]
		next = strconv.FormatInt(rows[limit-1].ID, 10)
	}
	return rows, next, nil
}

// candidates lists the failed deliveries f selects that were not
// re-emitted (see bulkSource).
func (s *PostgresSupervisor) candidates(ctx context.Context, f DeliveryFilter, after string, limit int) ([]candidate, string, error) {
	// Re-emitted rows are left out here, not in SQL, so that the list
	// walks the failed-by-endpoint index in order.
	rows, next, err := s.list(ctx, f, after, limit)
	if err != nil {
		return nil, "", err
	}
	cs := make([]candidate, 0, len(rows))
	for _, r := range rows {
		if r.ReemittedAs != nil {
			continue
		}
		c := candidate{id: strconv.FormatInt(r.ID, 10), anchor: r.AcceptedAt, status: deref(r.LastStatus), prepared: !r.MCPBody}
		if r.FirstAttemptAt != nil {
			c.anchor = *r.FirstAttemptAt
		}
		cs = append(cs, c)
	}
	return cs, next, nil
}

// RedeliverMatching redelivers every failed delivery f selects, one short
// transaction each, newest first, as [PostgresSupervisor.Redeliver] does.
// Workers may run meanwhile. See [BulkOptions] and [Inspector].
func (s *PostgresSupervisor) RedeliverMatching(ctx context.Context, f DeliveryFilter, o BulkOptions) (BulkResult, error) {
	return redeliverMatching(ctx, s.k, s, f, o)
}

// Stats counts deliveries by state and measures the backlog. It counts
// every row of the deliveries table: on a table holding millions of
// retained deliveries, cache it rather than call it per request. See
// [Inspector].
func (s *PostgresSupervisor) Stats(ctx context.Context) (Stats, error) {
	now := s.k.clock.Now()
	r, err := collectOne[statsRow](query(ctx, s.db, s.q.stats, nowParams{Now: now}))
	if err != nil {
		return Stats{}, dbError("stats", err)
	}
	st := Stats{Pending: r.Pending, Running: r.Running, Delivered: r.Delivered, Failed: r.Failed,
		Due: r.Due, OpenBreakers: r.OpenBreakers}
	if r.OldestDue != nil {
		st.OldestDueAt = r.OldestDue.UTC()
		st.OldestDueAge = max(now.Sub(st.OldestDueAt), 0)
	}
	return st, nil
}

// Breakers lists the breakers that are open, half-open or counting
// failures, in key order. See [Inspector].
func (s *PostgresSupervisor) Breakers(ctx context.Context, p Page) (BreakerList, error) {
	limit, err := p.limit()
	if err != nil {
		return BreakerList{}, err
	}
	rows, err := collect[keyedGateRow](query(ctx, s.db, s.q.breakers, breakerPageParams{After: p.After, Limit: limit + 1}))
	if err != nil {
		return BreakerList{}, dbError("breakers", err)
	}
	now := s.k.clock.Now()
	var out BreakerList
	for i, r := range rows {
		if i == limit {
			out.Next = rows[limit-1].Key
			break
		}
		g, _, err := r.gate()
		if err != nil {
			return BreakerList{}, dbError("breakers", err)
		}
		out.Breakers = append(out.Breakers, g.info(r.Key, s.k.breaker, now))
	}
	return out, nil
}

// ResetBreaker closes key's breaker and makes its pending deliveries due
// now, in one transaction, and wakes the workers. Workers running
// attempts for it meanwhile see the new state when they record them. See
// [Inspector].
func (s *PostgresSupervisor) ResetBreaker(ctx context.Context, key string) error {
	var old string
	var version int64
	err := queryRow(ctx, s.db, s.q.resetBreaker, keyAtParams{Key: key, Now: s.k.clock.Now()}).Scan(&old, &version)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return nil // closed and clean already
	case err != nil:
		return dbError("reset breaker", err)
	}
	if before, _, err := (&gateRow{State: &old}).gate(); err == nil {
		s.k.breakerReset(ctx, key, before.State, version)
	}
	s.wakeWorkers()
	return nil
}

// through returns the cursor of the page that starts with the delivery id.
func (s *PostgresSupervisor) through(id string) (string, error) {
	n, err := parseID(id)
	if err != nil {
		return "", err
	}
	return strconv.FormatInt(n+1, 10), nil
}
