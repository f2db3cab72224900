package webhook

import (
	"cmp"
	"container/heap"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/adcpkit/webhook/internal/engine"
)

// MemorySupervisor defaults.
const (
	ConcurrencyDefault    = 16
	MaxQueuedDefault      = 10_000
	MaxQueuedBytesDefault = 256 << 20
	RetainFinishedDefault = 10_000
	DrainTimeoutDefault   = 30 * time.Second
)

// MemoryConfig configures [NewMemorySupervisor]. The zero value is valid.
type MemoryConfig struct {
	// Retry is the retry policy. The zero value is the Python SDK's.
	Retry RetryPolicy
	// Breaker is the circuit-breaker policy. The zero value is the Python
	// SDK's.
	Breaker BreakerPolicy
	// LogSink receives every [Attempt]. Defaults to nil: no sink.
	LogSink LogSink
	// Logger receives the supervisor's own warnings (a failing sink, say)
	// and, at Info, circuit-breaker transitions.
	// Defaults to slog.Default().
	Logger *slog.Logger
	// Concurrency is how many attempts one RunWorker call runs at once.
	// Defaults to 16.
	Concurrency int
	// EndpointConcurrency is the most attempts in flight at once to one
	// endpoint (breaker key), in all of this supervisor's RunWorker calls:
	// an endpoint's deliveries past it wait, and other endpoints' go
	// first, so that one buyer that hangs until the timeout cannot take
	// every worker. Defaults to half of Concurrency (at least 1);
	// NoEndpointLimit turns it off.
	EndpointConcurrency int
	// MaxQueued bounds the deliveries accepted and not yet finished; SendMCP
	// returns ErrQueueFull beyond it. Defaults to 10,000.
	MaxQueued int
	// MaxQueuedBytes bounds the bytes (bodies, URLs, keys, headers and
	// credentials) of the deliveries the supervisor holds: to make room,
	// the finished ones kept for Delivery and Wait are forgotten oldest
	// first; when the unfinished ones alone would pass it, SendMCP returns
	// ErrQueueFull. Defaults to 256 MiB.
	MaxQueuedBytes int64
	// RetainFinished is how many finished deliveries stay visible to
	// Delivery and Wait, oldest forgotten first. Defaults to 10,000.
	RetainFinished int
	// DrainTimeout bounds how long RunWorker waits, once its context is done,
	// for in-flight attempts; after it they are cancelled, recorded, and left
	// queued for the next RunWorker without being charged an attempt or
	// counted by the breaker. Defaults to 30s.
	DrainTimeout time.Duration
	// AllowInsecureHTTP accepts plain http:// destinations, for local
	// development and tests. Defaults to false: https only.
	AllowInsecureHTTP bool
	// Clock is the time source. Defaults to the system clock; tests pass a
	// fake one.
	Clock Clock
	// Observer is told what happens to deliveries, for telemetry. Defaults
	// to nil: nothing, at no cost.
	Observer *Observer
}

// MemorySupervisor is a [Supervisor] that keeps its queue in process memory.
//
// It is not durable: deliveries not yet delivered are lost when the process
// exits (DeliveryStateIsDurable reports false). It honours
// [RetryPolicy.Horizon] when one is set. Use it for development, tests, and
// sellers who can afford to lose in-flight notifications on a crash; use the
// Postgres supervisor otherwise.
//
// Every RunWorker call runs up to Concurrency attempts at once; several calls
// share one queue. A delivery waiting for its retry delay, or for its breaker,
// holds no worker slot.
type MemorySupervisor struct {
	k              *core
	concurrency    int
	endpointLimit  int // attempts in flight per breaker key; 0: no limit
	maxQueued      int
	maxBytes       int64
	retainFinished int
	drainTimeout   time.Duration

	mu         sync.Mutex
	ready      []*memDelivery // due now, FIFO
	delayed    memHeap        // waiting for a retry delay or an open breaker
	byID       map[string]*memDelivery
	byKey      map[string]*memDelivery // idempotency key bindings, as long as byID holds them
	finished   []string                // IDs of finished deliveries, oldest first
	breakers   map[string]*memBreaker  // only breakers not closed-and-clean
	flows      map[string]*memFlow     // only keys with attempts in flight
	periods    uint64                  // the highest Period of a forgotten breaker
	seq        int64                   // the last HealthEvent.Seq
	seqs       map[string]int64
	unfinished int
	heldBytes  int64 // the size of every delivery in byID
	// unfinishedBytes is the size of the unfinished ones.
	unfinishedBytes int64
	order           uint64        // deliveries accepted so far
	idPrefix        string        // random per supervisor: IDs are idPrefix + order
	changed         chan struct{} // closed on the next change; nil when nobody waits
}

type memDelivery struct {
	job
	order      uint64
	state      DeliveryState
	dueAt      time.Time
	lastError  string
	lastStatus int
	finishedAt time.Time
	probe      probe         // the half-open probe slot it holds, if any
	slot       bool          // it holds one of its endpoint's EndpointConcurrency slots
	done       chan struct{} // made by the first Wait; closed when over
	over       bool          // final, and its last record handed to the sink
	again      bool          // redelivered before settle: queue it then instead of finishing
	index      int
	size       int64  // prepared.size, counted in heldBytes
	reemitted  string // the ID of its re-emission, if any
	// records are its attempts' records, the newest ActivityLimitMax, for
	// Activity.
	records []Attempt
	// shownDropped counts the activity records trimmed from records.
	shownDropped int
}

func (d *memDelivery) base() *job { return &d.job }

// memFlow is one endpoint's attempts in flight, and the deliveries that
// wait for one of them to end (EndpointConcurrency), oldest first.
type memFlow struct {
	inFlight int
	waiting  []*memDelivery
}

type memBreaker struct {
	gate
	parked []*memDelivery // waiting for a half-open probe slot
	// probes is how many probes of the half-open period probePeriod are
	// in flight: the count the gate's room asks for.
	probes      int
	probePeriod uint64
}

// admit counts an attempt the gate let through: a half-open gate's is a
// probe of the current period.
func (b *memBreaker) admit() probe {
	if b.State != BreakerHalfOpen {
		return 0
	}
	if b.probePeriod != b.Period {
		b.probePeriod, b.probes = b.Period, 0
	}
	b.probes++
	return probe(b.Period)
}

// release frees the probe slot pr held, if it is the current period's.
func (b *memBreaker) release(pr probe) {
	if pr != 0 && uint64(pr) == b.probePeriod && b.probes > 0 {
		b.probes--
	}
}

// NewMemorySupervisor returns a MemorySupervisor that delivers with sender.
// A nil sender makes a supervisor that accepts and inspects but cannot run
// workers (RunWorker returns [ErrNilSender]); a bad config is a
// [*ConfigError].
func NewMemorySupervisor(sender Sender, cfg MemoryConfig) (*MemorySupervisor, error) {
	k, err := newCore(commonConfig{
		prefix:            "MemoryConfig.",
		sender:            sender,
		retry:             cfg.Retry,
		breaker:           cfg.Breaker,
		sink:              cfg.LogSink,
		logger:            cfg.Logger,
		clock:             cfg.Clock,
		allowInsecureHTTP: cfg.AllowInsecureHTTP,
		observer:          cfg.Observer,
	})
	if err != nil {
		return nil, err
	}
	switch {
	case cfg.Concurrency < 0:
		return nil, badConfig("MemoryConfig.Concurrency", "is negative; use 0 for %d", ConcurrencyDefault)
	case cfg.MaxQueued < 0:
		return nil, badConfig("MemoryConfig.MaxQueued", "is negative; use 0 for %d", MaxQueuedDefault)
	case cfg.MaxQueuedBytes < 0:
		return nil, badConfig("MemoryConfig.MaxQueuedBytes", "is negative; use 0 for %d", MaxQueuedBytesDefault)
	case cfg.RetainFinished < 0:
		return nil, badConfig("MemoryConfig.RetainFinished", "is negative; use 0 for %d", RetainFinishedDefault)
	case cfg.DrainTimeout < 0:
		return nil, badConfig("MemoryConfig.DrainTimeout", "is negative; use 0 for %v", DrainTimeoutDefault)
	}
	concurrency := cmp.Or(cfg.Concurrency, ConcurrencyDefault)
	limit, err := endpointLimit("MemoryConfig.EndpointConcurrency", cfg.EndpointConcurrency, concurrency)
	if err != nil {
		return nil, err
	}
	return &MemorySupervisor{
		k:              k,
		concurrency:    concurrency,
		endpointLimit:  limit,
		flows:          make(map[string]*memFlow),
		maxQueued:      cmp.Or(cfg.MaxQueued, MaxQueuedDefault),
		maxBytes:       cmp.Or(cfg.MaxQueuedBytes, MaxQueuedBytesDefault),
		retainFinished: cmp.Or(cfg.RetainFinished, RetainFinishedDefault),
		drainTimeout:   cmp.Or(cfg.DrainTimeout, DrainTimeoutDefault),
		byID:           make(map[string]*memDelivery),
		byKey:          make(map[string]*memDelivery),
		breakers:       make(map[string]*memBreaker),
		seqs:           make(map[string]int64),
		idPrefix:       newUUID()[:8] + "-",
	}, nil
}

// DeliveryStateIsDurable reports false: the queue lives in process memory.
func (s *MemorySupervisor) DeliveryStateIsDurable() bool { return false }

// DeliveryRetryHorizon returns [RetryPolicy.Horizon] (24 h unless
// configured), or 0 for [NoHorizon].
func (s *MemorySupervisor) DeliveryRetryHorizon() time.Duration { return max(s.k.retry.Horizon, 0) }

// SendMCP validates w, builds its body once and queues it. See [Supervisor].
func (s *MemorySupervisor) SendMCP(ctx context.Context, w MCPWebhook) (Receipt, error) {
	now := s.k.clock.Now()
	d, err := s.k.urls.prepareMCP(w, now)
	if err != nil {
		return Receipt{}, err
	}
	return s.accept(ctx, d, now, 0)
}

// SendPrepared validates w and queues a copy of its body. See [Supervisor].
func (s *MemorySupervisor) SendPrepared(ctx context.Context, w PreparedWebhook) (Receipt, error) {
	d, err := s.k.urls.prepare(w)
	if err != nil {
		return Receipt{}, err
	}
	return s.accept(ctx, d, s.k.clock.Now(), 0)
}

// accept queues d. A re-emission (d.reemissionOf set) keeps seq, the
// original's sequence number, and is not refused by an open breaker.
func (s *MemorySupervisor) accept(ctx context.Context, d prepared, now time.Time, seq int64) (Receipt, error) {
	done := s.k.accepting(ctx, &d, now) // a no-op without an Observer
	r, dup, err := s.store(ctx, &d, now, seq)
	done(AcceptResult{Receipt: r, Duplicate: dup, Err: err})
	return r, err
}

// store is accept without the observer. It may change *d. dup reports a
// key accepted before with this payload: r is that delivery's.
func (s *MemorySupervisor) store(ctx context.Context, d *prepared, now time.Time, seq int64) (r Receipt, dup bool, err error) {
	s.mu.Lock()
	if r, dup, until, err := s.priorLocked(d, now); err != nil || dup || !until.IsZero() {
		s.mu.Unlock()
		if !until.IsZero() {
			err = s.k.refused(ctx, d, now, until)
		}
		return r, dup, err
	}
	size := d.size()
	if err := s.fullLocked(1, size); err != nil {
		// Refused before anything is forgotten: a refusal costs the
		// retained history nothing.
		s.mu.Unlock()
		return Receipt{}, false, err
	}
	for s.heldBytes+size > s.maxBytes {
		s.forgetOldestLocked() // finished ones only: the unfinished fit
	}
	r = s.insertLocked(d, now, seq)
	s.signalLocked()
	s.mu.Unlock()
	return r, false, nil
}

// priorLocked checks d against what is stored: a key accepted before
// (dup, with that delivery's receipt, or a conflict), or an open breaker
// under OpenDrop (until, when it lets a probe through; a re-emission is
// not refused). All zero: d may be stored.
func (s *MemorySupervisor) priorLocked(d *prepared, now time.Time) (r Receipt, dup bool, until time.Time, err error) {
	if prior := s.byKey[d.key]; prior != nil {
		if prior.fp != d.fp || prior.url != d.url {
			return Receipt{}, false, time.Time{}, conflict(prior.id)
		}
		// The same event again: its delivery, not a second one.
		return Receipt{ID: prior.id, IdempotencyKey: prior.key, Sequence: prior.seq, ReemissionOf: prior.reemissionOf}, true, time.Time{}, nil
	}
	if s.k.breaker.OpenAction == OpenDrop && d.reemissionOf == "" {
		if b := s.breakers[d.breakerKey]; b != nil && b.refuses(s.k.breaker, now) {
			return Receipt{}, false, b.openUntil(s.k.breaker), nil
		}
	}
	return Receipt{}, false, time.Time{}, nil
}

// fullLocked refuses n more deliveries of size bytes that would pass
// MaxQueued or MaxQueuedBytes.
func (s *MemorySupervisor) fullLocked(n int, size int64) error {
	switch {
	case s.unfinished+n > s.maxQueued:
		return fmt.Errorf("%w: %d deliveries are waiting, and %d more would pass MemoryConfig.MaxQueued (%d)", ErrQueueFull, s.unfinished, n, s.maxQueued)
	case s.unfinishedBytes+size > s.maxBytes:
		return fmt.Errorf("%w: waiting deliveries hold %d bytes, and %d more would pass MemoryConfig.MaxQueuedBytes (%d)",
			ErrQueueFull, s.unfinishedBytes, size, s.maxBytes)
	}
	return nil
}

// insertLocked queues d, which fits. A re-emission keeps seq.
func (s *MemorySupervisor) insertLocked(d *prepared, now time.Time, seq int64) Receipt {
	size := d.size()
	if key := d.routing.SequenceKey; key != "" && d.reemissionOf == "" {
		s.seqs[key]++
		seq = s.seqs[key]
	}
	if d.seqAt > 0 {
		d.body, d.seqAt = spliceSequence(d.body, d.seqAt, seq), 0
	}
	s.order++
	md := &memDelivery{
		job:   job{prepared: *d, id: s.idPrefix + strconv.FormatUint(s.order, 10), seq: seq, accepted: now},
		order: s.order,
		size:  size,
		state: StatePending,
		dueAt: now,
		index: -1,
	}
	s.byID[md.id] = md
	s.byKey[md.key] = md
	s.heldBytes += size
	s.unfinishedBytes += size
	s.unfinished++
	s.ready = append(s.ready, md)
	if orig := s.byID[d.reemissionOf]; orig != nil {
		orig.reemitted = md.id
	}
	return Receipt{ID: md.id, IdempotencyKey: d.key, Sequence: seq, ReemissionOf: d.reemissionOf}
}

// Redeliver sends a failed delivery again, following AdCP 3.2's retry
// horizon and its 409 rule. Within the horizon (counted from the delivery's first attempt,
// which a redelivery does not move) it is queued again, due now, with
// the same bytes and key and a fresh allowance of attempts; the Receipt
// is the delivery's own. Past the horizon, or when the receiver last
// answered 409 (it holds the key bound to another payload, and a sender
// must stop using that key), the key must never be sent again, so
// Redeliver re-emits it: a new delivery, linked to the original
// (Receipt.ReemissionOf, Delivery.ReemittedAs and every record's
// ReemissionOf), with a fresh idempotency_key and otherwise the same body,
// notification_id included, and the same sequence number. Only bodies
// SendMCP built can be rebuilt: for a SendPrepared body past its horizon
// it returns [ErrReemitPrepared]. It returns [ErrNotFound] for an unknown
// (or forgotten) ID, [ErrNotFailed] for a delivery that has not failed or
// was already re-emitted, and [ErrQueueFull] as SendMCP does. A delivery
// that failed while the log sink still has its last record is queued again
// once the sink returns, so that the sink sees its records in order.
func (s *MemorySupervisor) Redeliver(ctx context.Context, id string) (Receipt, error) {
	s.mu.Lock()
	d, ok := s.byID[id]
	switch {
	case !ok:
		s.mu.Unlock()
		return Receipt{}, fmt.Errorf("%w: %q", ErrNotFound, id)
	case d.state != StateFailed:
		s.mu.Unlock()
		return Receipt{}, fmt.Errorf("%w: delivery %s is %s; only failed deliveries can be redelivered", ErrNotFailed, id, d.state)
	case d.reemitted == reemitting:
		s.mu.Unlock()
		return Receipt{}, fmt.Errorf("%w: delivery %s is being re-emitted", ErrNotFailed, id)
	case d.reemitted != "":
		s.mu.Unlock()
		return Receipt{}, fmt.Errorf("%w: delivery %s was re-emitted as %s; redeliver that one", ErrNotFailed, id, d.reemitted)
	}
	now := s.k.clock.Now()
	if !s.k.pastHorizon(d.anchor(), now) && d.lastStatus != http.StatusConflict {
		if !d.over {
			// Failed, and its last record is still with the sink: it is
			// queued again once the sink has it (settle), so that the
			// sink sees its records in order. (A sink may call this.)
			d.state, d.dueAt, d.attempts, d.lost, d.again = StatePending, now, 0, 0, true
			d.finishedAt, d.lastError, d.lastStatus = time.Time{}, "", 0
			s.mu.Unlock()
			return Receipt{ID: d.id, IdempotencyKey: d.key, Sequence: d.seq, ReemissionOf: d.reemissionOf}, nil
		}
		if s.unfinished >= s.maxQueued || s.unfinishedBytes+d.size > s.maxBytes {
			s.mu.Unlock()
			return Receipt{}, fmt.Errorf("%w: %d deliveries holding %d bytes are waiting (MemoryConfig.MaxQueued, MaxQueuedBytes)", ErrQueueFull, s.unfinished, s.unfinishedBytes)
		}
		for i, f := range s.finished {
			if f == id {
				s.finished = append(s.finished[:i], s.finished[i+1:]...)
				break
			}
		}
		d.state, d.dueAt, d.attempts, d.lost, d.over, d.done = StatePending, now, 0, 0, false, nil
		d.finishedAt, d.lastError, d.lastStatus = time.Time{}, "", 0
		s.unfinished++
		s.unfinishedBytes += d.size
		s.ready = append(s.ready, d)
		s.signalLocked()
		s.mu.Unlock()
		return Receipt{ID: d.id, IdempotencyKey: d.key, Sequence: d.seq, ReemissionOf: d.reemissionOf}, nil
	}
	// Past the horizon, or after a 409 (the receiver holds the key bound
	// to another payload: it must not be sent again), a re-emission. The
	// original is marked first, so that a concurrent Redeliver cannot
	// re-emit it too.
	nd, err := reemission(&d.prepared, id)
	if err != nil {
		s.mu.Unlock()
		return Receipt{}, err
	}
	seq := d.seq
	d.reemitted = reemitting
	s.mu.Unlock()
	r, err := s.accept(ctx, nd, now, seq) // sets d.reemitted
	if err != nil {
		s.mu.Lock()
		d.reemitted = ""
		s.mu.Unlock()
	}
	return r, err
}

// reemitting marks a delivery whose re-emission is being accepted.
const reemitting = "(re-emitting)"

// NextSequence allocates and returns the next number of key's sequence, as
// the Python SDK's next_sequence does. Deliveries with that SequenceKey draw
// from the same counter, so a number taken here is not used by a delivery.
func (s *MemorySupervisor) NextSequence(key string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seqs[key]++
	return s.seqs[key]
}

// Breaker returns the state of the breaker for key (a BreakerKey, or a URL
// for webhooks without one). The error is always nil: it has the
// [Inspector] signature.
func (s *MemorySupervisor) Breaker(_ context.Context, key string) (BreakerState, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.breakers[key]
	if !ok {
		return BreakerClosed, nil
	}
	c := b.gate
	c.advance(s.k.breaker, s.k.clock.Now())
	return c.State, nil
}

// Attempts returns the records of a delivery's attempts (and decisions,
// with AttemptNumber 0) in the order they were made: the newest
// ActivityLimitMax of them (the memory supervisor keeps no more). It
// returns [ErrNotFound] as Delivery does.
func (s *MemorySupervisor) Attempts(_ context.Context, id string) ([]Attempt, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.byID[id]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	return append([]Attempt{}, d.records...), nil
}

// Delivery returns a snapshot of a delivery, or [ErrNotFound] when the ID is
// unknown or the delivery finished longer ago than RetainFinished others.
func (s *MemorySupervisor) Delivery(_ context.Context, id string) (Delivery, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.byID[id]
	if !ok {
		return Delivery{}, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	return d.snapshot(), nil
}

// Wait blocks, without polling, until the delivery reaches a final state and
// the log sink has returned from every record of its attempts (or outlived
// SinkTimeout), and returns its snapshot. It returns ctx's error, with the
// snapshot as it stands, when ctx ends first.
func (s *MemorySupervisor) Wait(ctx context.Context, id string) (Delivery, error) {
	s.mu.Lock()
	d, ok := s.byID[id]
	if !ok {
		s.mu.Unlock()
		return Delivery{}, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	if d.over {
		defer s.mu.Unlock()
		return d.snapshot(), nil
	}
	if d.done == nil {
		d.done = make(chan struct{})
	}
	done := d.done
	s.mu.Unlock()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = ctx.Err()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return d.snapshot(), err
}

func (d *memDelivery) snapshot() Delivery { return d.view(true) }

// view is d's snapshot, with or without its body.
func (d *memDelivery) view(body bool) Delivery {
	v := Delivery{
		ID:               d.id,
		URL:              d.url,
		IdempotencyKey:   d.key,
		SequenceKey:      d.routing.SequenceKey,
		Sequence:         d.seq,
		BreakerKey:       d.breakerKey,
		TaskType:         d.taskType,
		TaskID:           d.taskID,
		State:            d.state,
		FirstAttemptAt:   d.firstAt,
		NotificationType: d.routing.NotificationType,
		SubscriberID:     d.routing.SubscriberID,
		Tenant:           d.routing.Tenant,
		Attempts:         d.attempts,
		LastError:        d.lastError,
		LastStatus:       d.lastStatus,
		AcceptedAt:       d.accepted,
		FinishedAt:       d.finishedAt,
		ReemissionOf:     d.reemissionOf,
		ReemittedAs:      strings.TrimPrefix(d.reemitted, reemitting),
	}
	if d.state == StatePending {
		v.NextAttemptAt = d.dueAt
	}
	if body {
		v.Body = append([]byte(nil), d.body...)
	}
	return v
}

// RunWorker delivers queued webhooks until ctx is done. See [Supervisor].
//
// It runs Concurrency worker goroutines fed by one claimer, which claims
// ready deliveries only for free workers. A worker is busy for the attempt
// and for the log sink call that reports it, at most SinkTimeout: a worker
// stuck in the sink is replaced.
func (s *MemorySupervisor) RunWorker(ctx context.Context) error {
	if s.k.sender == nil {
		return errNoWorkers
	}
	engine.New(engine.Config{
		Workers:      s.concurrency,
		Batch:        s.concurrency,
		DrainTimeout: s.drainTimeout,
		Logger:       s.k.logger,
	}, engine.Source[*memDelivery](&memSource{s: s}),
		func(ctx context.Context, replace func()) engine.Worker[*memDelivery] {
			return newAttemptWorker(s.k, ctx, replace, attemptStore[*memDelivery](memStore{s}))
		}).Run(ctx)
	return nil
}

// memSource is the queue as one RunWorker call's pool sees it.
type memSource struct {
	s *MemorySupervisor
	// Set by a claim that came back short, for Idle: closed on the next
	// change to the queue, and when the earliest delayed delivery falls due.
	changed chan struct{}
	next    time.Time
}

// Claim takes up to n ready deliveries.
func (src *memSource) Claim(ctx context.Context, n int) ([]*memDelivery, error) {
	s := src.s
	s.mu.Lock()
	var changes []gateChange
	defer func() {
		for _, c := range changes {
			s.k.gateChanged(ctx, c.key, c.before, c.after, c.seq)
		}
	}() // after the unlock
	defer s.mu.Unlock()
	now := s.k.clock.Now()
	var ds []*memDelivery
	for len(ds) < n {
		d, next := s.claimLocked(now, &changes)
		if d == nil {
			if s.changed == nil {
				s.changed = make(chan struct{})
			}
			src.changed, src.next = s.changed, next
			break
		}
		ds = append(ds, d)
	}
	return ds, nil
}

// Idle waits for a change to the queue, the next delayed delivery, or wake.
func (src *memSource) Idle(ctx context.Context, wake <-chan struct{}) {
	var timer <-chan time.Time
	stop := func() bool { return false }
	if !src.next.IsZero() {
		timer, stop = src.s.k.clock.TimerAt(src.next)
	}
	defer stop()
	select {
	case <-ctx.Done():
	case <-src.changed:
	case <-timer:
	case <-wake:
	}
}

// Unclaim puts back a delivery claimed while RunWorker was stopping,
// ready, and frees the probe slot it held.
func (src *memSource) Unclaim(_ context.Context, d *memDelivery) {
	s := src.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if b := s.breakers[d.breakerKey]; b != nil && d.probe != 0 {
		b.release(d.probe)
		s.releaseParkedLocked(d.breakerKey, b)
	}
	s.freeSlotLocked(d)
	d.probe, d.state = 0, StatePending
	s.ready = append(s.ready, d)
	s.signalLocked()
}

// gateChange is a gate's change, to report once the lock is released.
type gateChange struct {
	key           string
	before, after gate
	seq           int64 // HealthEvent.Seq
}

// claimLocked takes the next delivery whose breaker allows an attempt, or
// reports when the earliest delayed one falls due (zero: none is waiting).
func (s *MemorySupervisor) claimLocked(now time.Time, changes *[]gateChange) (*memDelivery, time.Time) {
	for len(s.delayed) > 0 && !s.delayed[0].dueAt.After(now) {
		s.ready = append(s.ready, heap.Pop(&s.delayed).(*memDelivery))
	}
	for len(s.ready) > 0 {
		d := s.ready[0]
		s.ready[0] = nil
		s.ready = s.ready[1:]
		if !s.takeSlotLocked(d) {
			continue // it waits for one of its endpoint's attempts to end
		}
		b := s.breakers[d.breakerKey]
		if b == nil { // closed, with no failures: no entry is kept
			d.state, d.gated = StateRunning, false
			return d, time.Time{}
		}
		before := b.gate
		if b.advance(s.k.breaker, now); b.State != before.State {
			s.seq++
			*changes = append(*changes, gateChange{d.breakerKey, before, b.gate, s.seq}) // half-open
		}
		if d.gated = b.State != BreakerClosed; d.gated && s.k.pastHorizon(d.anchor(), now) {
			d.state = StateRunning // to expire, without taking a probe slot
			return d, time.Time{}
		}
		room, retryAt := b.room(s.k.breaker, now, b.probes, b.probePeriod)
		switch {
		case room > 0:
			d.probe = b.admit()
			d.state = StateRunning
			return d, time.Time{}
		case retryAt.IsZero():
			s.freeSlotLocked(d)
			b.parked = append(b.parked, d)
		default:
			s.freeSlotLocked(d)
			d.dueAt = retryAt
			heap.Push(&s.delayed, d)
		}
	}
	if len(s.delayed) > 0 {
		return nil, s.delayed[0].dueAt
	}
	return nil, time.Time{}
}

// takeSlotLocked gives d one of its endpoint's EndpointConcurrency slots,
// or, when they are all taken, makes it wait for one (false).
func (s *MemorySupervisor) takeSlotLocked(d *memDelivery) bool {
	if s.endpointLimit == 0 || d.slot { // none, or handed one as it waited
		return true
	}
	f := s.flows[d.breakerKey]
	if f == nil {
		f = &memFlow{}
		s.flows[d.breakerKey] = f
	}
	if f.inFlight >= s.endpointLimit {
		f.waiting = append(f.waiting, d)
		return false
	}
	f.inFlight++
	d.slot = true
	return true
}

// freeSlotLocked frees d's endpoint slot, if it holds one: the oldest
// delivery waiting for it takes it and is ready again, so that no newer
// delivery of the endpoint overtakes it.
func (s *MemorySupervisor) freeSlotLocked(d *memDelivery) {
	if !d.slot {
		return
	}
	d.slot = false
	f := s.flows[d.breakerKey]
	if len(f.waiting) > 0 {
		w := f.waiting[0]
		f.waiting[0] = nil
		f.waiting = f.waiting[1:]
		w.slot = true
		s.ready = append(s.ready, w)
		return
	}
	if f.inFlight--; f.inFlight == 0 {
		delete(s.flows, d.breakerKey)
	}
}

// memStore is the attempt logic's storage: the supervisor's own memory.
type memStore struct{ s *MemorySupervisor }

func (memStore) begin(ctx context.Context, _ *memDelivery) (context.Context, context.CancelFunc, bool) {
	return ctx, noCancel, true
}

// noCancel is a CancelFunc with nothing to cancel.
func noCancel() {}

// complete records c on d and its breaker. d stays out of the queue until
// settle, whatever c says, so that nothing else happens to it while the
// sink has its record.
func (st memStore) complete(ctx context.Context, d *memDelivery, c *completion) bool {
	s := st.s
	s.mu.Lock()
	var before, after gate // a gate's change, reported once unlocked
	var seq int64
	defer func() { s.k.gateChanged(ctx, d.breakerKey, before, after, seq) }()
	defer s.mu.Unlock()
	d.attempts, d.firstAt = c.attempts, c.firstAt
	d.lastStatus, d.lastError = c.status, c.errText
	{
		if len(d.records) == ActivityLimitMax {
			if shownAsActivity(&d.records[0]) {
				d.shownDropped++
			}
			d.records = append(d.records[:0], d.records[1:]...)
		}
		d.records = append(d.records, c.record)
	}
	if b, r, failed := s.breakers[d.breakerKey], c.result, c.failedAtEndpoint(); b != nil || r == breakerFailure || failed {
		if b == nil {
			b = s.newBreakerLocked(d.breakerKey)
		}
		before = b.gate
		b.release(d.probe)
		b.record(s.k.breaker, r, failed, c.end)
		if after = b.gate; after != before {
			s.seq++
			seq = s.seq
		}
		s.releaseParkedLocked(d.breakerKey, b)
	}
	d.probe = 0
	s.freeSlotLocked(d)
	d.state, d.dueAt, d.finishedAt = c.state, c.due, c.finishedAt
	s.signalLocked()
	return false
}

// settle puts d back in the queue, or finishes it, once the sink has its
// record.
func (st memStore) settle(d *memDelivery, c *completion, _ bool) {
	s := st.s
	s.mu.Lock()
	switch {
	case c.state == StatePending:
		heap.Push(&s.delayed, d)
	case d.again: // redelivered while the sink had its last record
		d.again = false
		s.ready = append(s.ready, d)
	default:
		s.finishLocked(d)
	}
	s.signalLocked()
	s.mu.Unlock()
}

// releaseParkedLocked requeues deliveries that waited for a probe slot (the
// breaker just changed) and forgets breakers back in their initial state.
func (s *MemorySupervisor) releaseParkedLocked(key string, b *memBreaker) {
	s.ready = append(s.ready, b.parked...)
	clear(b.parked)
	b.parked = b.parked[:0]
	if b.clean() && (b.probes == 0 || b.probePeriod != b.Period) && len(b.parked) == 0 {
		s.periods = max(s.periods, b.Period)
		delete(s.breakers, key)
	}
}

// newBreakerLocked adds a closed breaker for key. Its half-open periods
// continue past every forgotten breaker's, so a probe still in flight from
// one of those cannot free a slot of the new one.
func (s *MemorySupervisor) newBreakerLocked(key string) *memBreaker {
	b := &memBreaker{gate: gate{Period: s.periods}}
	s.breakers[key] = b
	return b
}

func (s *MemorySupervisor) finishLocked(d *memDelivery) {
	s.unfinished--
	s.unfinishedBytes -= d.size
	d.over = true
	if d.done != nil {
		close(d.done)
	}
	s.finished = append(s.finished, d.id)
	if len(s.finished) > s.retainFinished {
		s.forgetOldestLocked()
	}
}

// forgetOldestLocked forgets the delivery that finished first.
func (s *MemorySupervisor) forgetOldestLocked() {
	if d := s.byID[s.finished[0]]; d != nil {
		s.heldBytes -= d.size
		delete(s.byID, d.id)
		if s.byKey[d.key] == d {
			delete(s.byKey, d.key)
		}
	}
	s.finished[0] = ""
	s.finished = s.finished[1:]
}

// signalLocked wakes claimers waiting for a change, if any.
func (s *MemorySupervisor) signalLocked() {
	if s.changed != nil {
		close(s.changed)
		s.changed = nil
	}
}

// memHeap orders delayed deliveries by due time, then acceptance order.
type memHeap []*memDelivery

func (h memHeap) Len() int { return len(h) }
func (h memHeap) Less(i, j int) bool {
	if !h[i].dueAt.Equal(h[j].dueAt) {
		return h[i].dueAt.Before(h[j].dueAt)
	}
	return h[i].order < h[j].order
}
func (h memHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index = i
	h[j].index = j
}
func (h *memHeap) Push(x any) {
	d := x.(*memDelivery)
	d.index = len(*h)
	*h = append(*h, d)
}
func (h *memHeap) Pop() any {
	old := *h
	d := old[len(old)-1]
	old[len(old)-1] = nil
	d.index = -1
	*h = old[:len(old)-1]
	return d
}

// Activity returns the AdCP webhook_activity[] records of the deliveries q
// selects, newest first: one per attempt (each delivery keeps its newest
// ActivityLimitMax), and a pending one for a delivery's queued or
// in-flight attempt. Only deliveries with a Routing.NotificationType have
// records (the record's notification_type is required). They last as long
// as the delivery is retained (RetainFinished), not the 30 days AdCP asks
// of a seller that surfaces them: use the PostgresSupervisor for that.
func (s *MemorySupervisor) Activity(ctx context.Context, q ActivityQuery) ([]ActivityRecord, error) {
	q, err := q.check()
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []ActivityRecord
	add := func(d *memDelivery) {
		if q.TaskID != "" && d.taskID != q.TaskID || q.SubscriberID != "" && d.routing.SubscriberID != q.SubscriberID {
			return
		}
		n := d.shownDropped
		for i := range d.records {
			if shownAsActivity(&d.records[i]) {
				n++
				out = append(out, activityOf(&d.records[i], n))
			}
		}
		if d.state == StatePending || d.state == StateRunning {
			base := s.k.baseRecord(&d.prepared, d.id, d.seq)
			if r, ok := pendingActivity(base, n+1, d.dueAt); ok {
				out = append(out, r)
			}
		}
	}
	if q.DeliveryID != "" {
		if d := s.byID[q.DeliveryID]; d != nil {
			add(d)
		}
	} else {
		for _, d := range s.byID {
			add(d)
		}
	}
	return newestFirst(out, q.Limit), nil
}
