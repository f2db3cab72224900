// Package engine is the worker pool both supervisors run: a claimer that
// claims due jobs for free workers and waits when there are none, the
// worker goroutines, and the drain when the pool stops. It knows nothing of
// webhooks: a supervisor plugs in a [Source] (its storage) and a [Worker]
// (the attempt logic), and the pool schedules them.
package engine

import (
	"cmp"
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Source is a supervisor's storage as the pool sees it. The pool calls
// Claim and Idle from its one claimer goroutine, and Unclaim from workers.
type Source[J any] interface {
	// Claim takes up to n due jobs (n ≥ 1). An error is logged and the
	// claim retried with backoff; jobs returned with it are still run.
	Claim(ctx context.Context, n int) ([]J, error)
	// Idle blocks until a job may be due: the source's own signal, a
	// receive on wake, or ctx done. It is called after a claim that
	// returned fewer jobs than asked for.
	Idle(ctx context.Context, wake <-chan struct{})
	// Unclaim gives back a job claimed but not started because the pool is
	// stopping: due again, uncharged.
	Unclaim(ctx context.Context, j J)
}

// Worker runs jobs on one worker goroutine; the pool makes one per
// goroutine, so a Worker may keep state between jobs.
type Worker[J any] interface {
	// Run runs j. It calls release (once or more; after the first it is a
	// no-op) when j's active phase is over: with Config.Active set, the
	// pool may then start another job while Run finishes j. Run returns
	// true when it has handed its goroutine's work to a replacement
	// (the replace function the Worker was made with has been called, or
	// will be): the pool then lets the goroutine exit and the replacement
	// frees what j still holds.
	Run(ctx context.Context, j J, release func()) (replaced bool)
	// Stop releases what the Worker holds when its goroutine exits.
	Stop()
}

// Config sizes a pool.
type Config struct {
	// Workers is how many jobs run at once: the worker goroutines.
	Workers int
	// Active, when above 0, is how many jobs may be in their active phase
	// at once: from when a worker takes a job to when Run calls release.
	// The claimer then claims for free active slots, and the other
	// Workers-Active goroutines finish jobs released from theirs (a
	// supervisor writing an attempt's result while the next attempt runs).
	// 0: a job is active until Run returns, and Workers bound both.
	Active int
	// Buffer is how many claimed jobs may wait for a free worker. With a
	// buffer, the claimer keeps claiming while every worker is busy.
	Buffer int
	// Batch is the most jobs one claim takes.
	Batch int
	// BacklogBatch is how many free slots the claimer waits for before
	// claiming again after a claim that came back full (a backlog): claims
	// stay few per job. 0 or 1: claim for the first free slot.
	BacklogBatch int
	// DrainTimeout bounds how long a stopping pool waits for running jobs
	// before it cancels their context.
	DrainTimeout time.Duration
	// Logger receives claim failures and drain timeouts.
	Logger *slog.Logger
}

// Pool runs jobs from one Source on a fixed number of worker goroutines.
type Pool[J any] struct {
	cfg       Config
	src       Source[J]
	newWorker func(ctx context.Context, replace func()) Worker[J]

	stopping context.Context // Run's: once done, start no job
	runCtx   context.Context // the jobs': cancelled only after DrainTimeout
	work     chan J
	slots    chan struct{} // a token per active or waiting job
	active   chan struct{} // with Config.Active: a token per worker that may take a job
	wake     chan struct{}
	workers  sync.WaitGroup
}

// New returns a pool that runs src's jobs with workers made by newWorker.
// newWorker gets the context jobs run under (its values are Run's; it is
// cancelled only when DrainTimeout passes) and the function that starts a
// replacement worker goroutine.
func New[J any](cfg Config, src Source[J], newWorker func(ctx context.Context, replace func()) Worker[J]) *Pool[J] {
	cfg.Workers = max(cfg.Workers, 1)
	cfg.Active = min(max(cfg.Active, 0), cfg.Workers)
	active := cmp.Or(cfg.Active, cfg.Workers)
	cfg.Batch = max(cfg.Batch, 1)
	cfg.BacklogBatch = min(max(cfg.BacklogBatch, 1), cfg.Batch, active+cfg.Buffer) // more slots than there are could never be free
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	p := &Pool[J]{
		cfg:       cfg,
		src:       src,
		newWorker: newWorker,
		work:      make(chan J, cfg.Buffer),
		slots:     make(chan struct{}, active+cfg.Buffer),
		wake:      make(chan struct{}, 1),
	}
	if cfg.Active > 0 {
		p.active = make(chan struct{}, cfg.Active)
	}
	return p
}

// held is what a job holds of its pool: its slot and, with Config.Active,
// its worker's active token. free gives them back, once.
type held struct {
	slots, active chan struct{}
	once          sync.Once
}

func (h *held) free() {
	h.once.Do(func() {
		<-h.slots
		if h.active != nil {
			<-h.active
		}
	})
}

// release is what Run gets: with Config.Active, free; without, nothing
// (the job is active until Run returns).
func (h *held) release() {
	if h.active != nil {
		h.free()
	}
}

// Wake tells an idle claimer that a job may be due. It never blocks, and
// wake-ups coalesce.
func (p *Pool[J]) Wake() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// Run claims and runs jobs until ctx is done, then gives back claimed jobs
// that have not started, waits for running ones (cancelling them once
// DrainTimeout passes) and returns. A Pool runs once.
func (p *Pool[J]) Run(ctx context.Context) {
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	p.stopping, p.runCtx = ctx, runCtx
	p.workers.Add(p.cfg.Workers)
	for range p.cfg.Workers {
		go p.loop(nil)
	}
	p.claimLoop(ctx)
	close(p.work)
	p.drain(ctx, cancel)
}

// loop is one worker goroutine. A replacement starts by freeing what the
// job of the worker it replaces still holds (inherited).
func (p *Pool[J]) loop(inherited *held) {
	var current atomic.Pointer[held] // the job Run is running, for the replacement
	w := p.newWorker(p.runCtx, func() { go p.loop(current.Load()) })
	defer w.Stop()
	if inherited != nil {
		inherited.free()
	}
	for {
		if p.active != nil {
			p.active <- struct{}{} // take a job only when it can start
		}
		j, ok := <-p.work
		if !ok {
			if p.active != nil {
				<-p.active
			}
			break
		}
		h := &held{slots: p.slots, active: p.active}
		if p.stopping.Err() != nil {
			p.src.Unclaim(p.runCtx, j)
			h.free()
			continue
		}
		current.Store(h)
		if w.Run(p.runCtx, j, h.release) {
			return // the replacement frees what j holds and carries on
		}
		h.free()
	}
	p.workers.Done()
}

// claimLoop claims for free slots until ctx is done. A slot is an active
// job or a claimed one waiting in the work channel. After a claim that came
// back full it waits for BacklogBatch free slots; otherwise it claims for
// the first, taking every other slot free at that moment too, up to Batch.
func (p *Pool[J]) claimLoop(ctx context.Context) {
	var b Backoff
	backlog := false
	for ctx.Err() == nil {
		want := 1
		if backlog {
			want = p.cfg.BacklogBatch
		}
		n := 0
		for n < want {
			select {
			case p.slots <- struct{}{}:
				n++
			case <-ctx.Done():
				p.free(n)
				return
			}
		}
	more:
		for n < p.cfg.Batch {
			select {
			case p.slots <- struct{}{}:
				n++
			default:
				break more
			}
		}
		jobs, err := p.src.Claim(ctx, n)
		p.free(n - len(jobs))
		for _, j := range jobs {
			p.work <- j
		}
		if err != nil {
			backlog = false
			if ctx.Err() != nil {
				return
			}
			p.cfg.Logger.LogAttrs(ctx, slog.LevelWarn, "webhook: claiming deliveries failed; retrying",
				slog.String("error", err.Error()), slog.Duration("retry_in", b.Peek()))
			Sleep(ctx, b.Next())
			continue
		}
		b.Reset()
		if backlog = len(jobs) == n; !backlog {
			p.src.Idle(ctx, p.wake)
		}
	}
}

func (p *Pool[J]) free(n int) {
	for range n {
		<-p.slots
	}
}

// drain waits for the workers; once DrainTimeout passes it cancels their
// jobs and waits for them to finish.
func (p *Pool[J]) drain(ctx context.Context, cancel context.CancelFunc) {
	drained := make(chan struct{})
	go func() {
		p.workers.Wait()
		close(drained)
	}()
	t := time.NewTimer(p.cfg.DrainTimeout)
	defer t.Stop()
	select {
	case <-drained:
	case <-t.C:
		p.cfg.Logger.LogAttrs(ctx, slog.LevelWarn, "webhook: drain timeout passed; cancelling in-flight attempts",
			slog.Duration("drain_timeout", p.cfg.DrainTimeout))
		cancel()
		<-drained
	}
}
