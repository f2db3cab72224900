package webhook

import (
	"context"
	"fmt"
	"log/slog"
	"reflect"
	"sync"
	"sync/atomic"
	"time"
)

// core is what every supervisor shares: policies, sender, sink, logger and
// clock, and the one way to run an attempt and report it.
type core struct {
	sender  Sender
	retry   RetryPolicy   // defaults applied
	breaker BreakerPolicy // defaults applied
	sink    LogSink
	logger  *slog.Logger
	clock   Clock
	random  func() float64
	urls    urlPolicy
	// maxLost bounds a delivery's lost attempts (PostgresConfig.
	// MaxLostAttempts); 0: no bound (memory loses none it could count).
	maxLost int
	// stuckSinks counts log sink calls that outlived SinkTimeout and have
	// not returned; sinkDropLogged is when a dropped record was last
	// logged (Unix nanoseconds). See sinkStuck.
	stuckSinks     atomic.Int32
	sinkDropLogged atomic.Int64
	// blockedWarned holds the destinations already warned about as
	// blocked (LoggableURL → struct{}); blockedCount bounds it.
	blockedWarned sync.Map
	blockedCount  atomic.Int32
	// obs is the Observer, or nil; hookPanics holds the names of its
	// functions that panicked (logged once each).
	obs        *Observer
	hookPanics sync.Map
}

// maxBlockedWarned bounds the destinations warnBlocked remembers: past it,
// a new one is not warned about.
const maxBlockedWarned = 1024

// warnBlocked logs, once per destination, that the sender refuses to dial
// it: SendMCP accepted the webhook, so this warning (and the attempt
// record's error) is where a user learns why it fails.
func (k *core) warnBlocked(ctx context.Context, url string) {
	u := LoggableURL(url)
	if _, seen := k.blockedWarned.Load(u); seen || k.blockedCount.Load() >= maxBlockedWarned {
		return
	}
	if _, seen := k.blockedWarned.LoadOrStore(u, struct{}{}); seen {
		return
	}
	k.blockedCount.Add(1)
	k.logger.LogAttrs(ctx, slog.LevelWarn, "webhook: the sender refuses to dial this destination (a private, loopback or reserved address), so its deliveries fail; for local development set HTTPSenderConfig.Development (it also lets the supervisor accept http:// URLs)",
		slog.String("url", u))
}

// commonConfig is the part of every supervisor's config that core needs.
type commonConfig struct {
	prefix            string // the config's name, for errors: "MemoryConfig."
	sender            Sender
	retry             RetryPolicy
	breaker           BreakerPolicy
	sink              LogSink
	logger            *slog.Logger
	clock             Clock
	allowInsecureHTTP bool
	observer          *Observer
}

func newCore(c commonConfig) (*core, error) {
	if c.sender != nil && isNil(c.sender) {
		return nil, fmt.Errorf("%w: the Sender is a typed nil; pass a working Sender, or a nil interface for a supervisor that only accepts and inspects", ErrNilSender)
	}
	if c.sink != nil && isNil(c.sink) {
		return nil, badConfig(c.prefix+"LogSink", "is a typed nil; leave it nil for no sink")
	}
	if c.clock != nil && isNil(c.clock) {
		return nil, badConfig(c.prefix+"Clock", "is a typed nil; leave it nil for the system clock")
	}
	retry := c.retry.withDefaults()
	if err := retry.validate(c.prefix + "Retry."); err != nil {
		return nil, err
	}
	br := c.breaker.withDefaults()
	if err := br.validate(c.prefix + "Breaker."); err != nil {
		return nil, err
	}
	k := &core{
		sender:  c.sender,
		retry:   retry,
		breaker: br,
		sink:    c.sink,
		logger:  c.logger,
		clock:   c.clock,
		random:  defaultRandom,
		urls:    urlPolicy{allowHTTP: c.allowInsecureHTTP, config: c.prefix},
		obs:     c.observer,
	}
	if k.logger == nil {
		k.logger = slog.Default()
	}
	if tc, ok := c.sender.(TenantChecker); ok {
		k.urls.tenants = tc
	}
	if d, ok := c.sender.(developmentSender); ok && d.development() {
		k.urls.allowHTTP = true
		k.logger.LogAttrs(context.Background(), slog.LevelWarn, "webhook: development mode (HTTPSenderConfig.Development): plain http:// URLs and private destinations are allowed; never run it in production")
	}
	if k.clock == nil {
		k.clock = systemClock{}
	}
	return k, nil
}

// isNil reports whether v holds a nil pointer, map, slice, channel or
// function: an interface that is not nil but cannot be used.
func isNil(v any) bool {
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Pointer, reflect.Map, reflect.Slice, reflect.Chan, reflect.Func, reflect.Interface:
		return rv.IsNil()
	}
	return false
}

// breakerChanged logs a breaker's transition, the same way for every
// supervisor.
func (k *core) breakerChanged(key string, from, to BreakerState) {
	if from == to {
		return
	}
	k.logger.LogAttrs(context.Background(), slog.LevelInfo, "webhook: circuit breaker "+to.String(),
		slog.String("breaker_key", LoggableURL(key)), slog.String("from", from.String()), slog.String("to", to.String()))
}

// errNoWorkers is RunWorker's error on a supervisor made without a Sender.
var errNoWorkers = fmt.Errorf("%w: this supervisor was made without a Sender, so it can accept and inspect deliveries but not run workers; pass an HTTPSender to NewMemorySupervisor or NewPostgresSupervisor", ErrNilSender)

// refusalRecord is the circuit_open record of a webhook refused at
// acceptance because its breaker is open until until (OpenDrop).
func (k *core) refusalRecord(d *prepared, now, until time.Time) Attempt {
	a := k.baseRecord(d, "", 0)
	a.Outcome = OutcomeCircuitOpen
	a.OccurredAt = now
	a.Error = "circuit breaker open until " + until.UTC().Format(time.RFC3339)
	return a
}

// refused hands a refusal's record to the sink and returns the refusal's
// error.
func (k *core) refused(ctx context.Context, d *prepared, now, until time.Time) error {
	return k.emitRefusal(ctx, k.refusalRecord(d, now, until), until)
}

// emitRefusal hands a (stored) refusal record to the sink and returns
// the refusal's error.
func (k *core) emitRefusal(ctx context.Context, a Attempt, until time.Time) error {
	k.emit(ctx, a)
	return fmt.Errorf("%w: destination refused until %s", ErrCircuitOpen, until.UTC().Format(time.RFC3339))
}
