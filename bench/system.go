package main

import (
	"cmp"
	"context"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/adcpkit/webhook"
)

// item is one webhook to deliver: its exact body and idempotency key,
// built once by the harness so that every system sends the same bytes.
type item struct {
	Key  string
	Body []byte
	// URL is the item's endpoint, when the scenario has many; "" is
	// env.URL. (The seed design takes one URL and runs no such scenario.)
	URL string
}

// to is the endpoint of it, whose default is url.
func (it item) to(url string) string { return cmp.Or(it.URL, url) }

// env is what a system gets for one run: a fresh database of its own (nil
// for systems without one), the receiver's URL, the shared Sender, and the
// number of workers every system runs.
type env struct {
	Pool    *pgxpool.Pool
	DBURL   string
	URL     string
	Sender  webhook.Sender
	Workers int
	// Breaker is the library supervisors' breaker policy (the others have
	// no breaker at the worker).
	Breaker webhook.BreakerPolicy
	// EndpointLimit is the library supervisors' EndpointConcurrency (0:
	// their default).
	EndpointLimit int
	// Ack reports a delivery made without HTTP (the minimal-SQL ceiling
	// only).
	Ack func(key string)
}

// system is one way to deliver webhooks, measured side by side with the
// others: same receiver, same Postgres, same Sender, same worker count.
type system interface {
	// Name is the column heading.
	Name() string
	// Setup prepares a fresh run (schema, migrations) in e.
	Setup(ctx context.Context, e env) error
	// Enqueue accepts items for delivery to e.URL, one acceptance per item
	// as a request handler would do it (concurrent callers allowed).
	Enqueue(ctx context.Context, items []item) error
	// EnqueueBulk accepts many items at once, the fastest way the system
	// offers, for pre-loading a burst. It may just call Enqueue.
	EnqueueBulk(ctx context.Context, items []item) error
	// Start runs the system's workers until stop is called; stop returns
	// once they have stopped.
	Start(ctx context.Context) (stop func(), err error)
}
