package engine

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// queue is a Source of ints for tests: Claim takes from the front, Idle
// waits for a push.
type queue struct {
	mu        sync.Mutex
	jobs      []int
	changed   chan struct{}
	claims    []int // n of each Claim
	unclaimed []int
	fail      int // the next fail claims return an error (and one job)
}

func newQueue(n int) *queue {
	q := &queue{changed: make(chan struct{}, 1)}
	for i := range n {
		q.jobs = append(q.jobs, i)
	}
	return q
}

func (q *queue) Claim(_ context.Context, n int) ([]int, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.claims = append(q.claims, n)
	if q.fail > 0 {
		q.fail--
		if len(q.jobs) == 0 {
			return nil, errors.New("database unreachable")
		}
		j := q.jobs[0]
		q.jobs = q.jobs[1:]
		return []int{j}, errors.New("database unreachable")
	}
	n = min(n, len(q.jobs))
	out := append([]int(nil), q.jobs[:n]...)
	q.jobs = q.jobs[n:]
	return out, nil
}

func (q *queue) Idle(ctx context.Context, wake <-chan struct{}) {
	select {
	case <-ctx.Done():
	case <-wake:
	case <-q.changed:
	}
}

func (q *queue) Unclaim(_ context.Context, j int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.unclaimed = append(q.unclaimed, j)
}

func (q *queue) push(j int) {
	q.mu.Lock()
	q.jobs = append(q.jobs, j)
	q.mu.Unlock()
	select {
	case q.changed <- struct{}{}:
	default:
	}
}

// runner is a Worker that records what it ran and how many ran at once.
// With release, do gets the job's release function too.
type runner struct {
	do      func(ctx context.Context, j int) bool
	release func(ctx context.Context, j int, release func()) bool
}

func (r runner) Run(ctx context.Context, j int, release func()) bool {
	if r.release != nil {
		return r.release(ctx, j, release)
	}
	return r.do(ctx, j)
}
func (r runner) Stop() {}

// peak records the most of a count at once.
type peak struct{ now, most atomic.Int32 }

func (p *peak) add() {
	n := p.now.Add(1)
	for m := p.most.Load(); n > m && !p.most.CompareAndSwap(m, n); m = p.most.Load() {
	}
}

func (p *peak) done() { p.now.Add(-1) }

// runUntil runs p until until is closed, then stops it and waits for Run
// to return.
func runUntil(p *Pool[int], until <-chan struct{}) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	<-until
	cancel()
	<-done
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func TestPoolRunsEveryJobOnceWithinItsWorkers(t *testing.T) {
	const jobs, workers = 200, 4
	q := newQueue(jobs)
	var running peak
	var mu sync.Mutex
	ran := map[int]int{}
	all := make(chan struct{})
	p := New(Config{Workers: workers, Buffer: 8, Batch: 8, BacklogBatch: 4, DrainTimeout: time.Minute, Logger: quiet},
		Source[int](q), func(context.Context, func()) Worker[int] {
			return runner{do: func(_ context.Context, j int) bool {
				running.add()
				mu.Lock()
				ran[j]++
				if len(ran) == jobs {
					close(all)
				}
				mu.Unlock()
				running.done()
				return false
			}}
		})
	runUntil(p, all)
	for j, n := range ran {
		if n != 1 {
			t.Errorf("job %d ran %d times", j, n)
		}
	}
	if m := running.most.Load(); m > workers {
		t.Errorf("%d jobs ran at once; Workers is %d", m, workers)
	}
	for _, n := range q.claims {
		if n < 1 || n > 8 {
			t.Errorf("a claim asked for %d jobs; Batch is 8", n)
		}
	}
}

// A backlog batch larger than the slots there are would wait for ever; the
// pool bounds it.
func TestPoolBacklogBatchLargerThanItsSlots(t *testing.T) {
	const jobs = 20
	q := newQueue(jobs)
	var ran atomic.Int32
	all := make(chan struct{})
	p := New(Config{Workers: 1, Buffer: 1, Batch: 8, BacklogBatch: 4, DrainTimeout: time.Minute, Logger: quiet},
		Source[int](q), func(context.Context, func()) Worker[int] {
			return runner{do: func(context.Context, int) bool {
				if ran.Add(1) == jobs {
					close(all)
				}
				return false
			}}
		})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go p.Run(ctx)
	select {
	case <-all:
	case <-time.After(20 * time.Second): // a guard against a hang, not a timing assertion
		t.Fatalf("ran %d of %d jobs: the claimer waits for more free slots than there are", ran.Load(), jobs)
	}
}

func TestPoolWakesWhenAJobArrives(t *testing.T) {
	q := newQueue(0)
	got := make(chan int, 1)
	p := New(Config{Workers: 2, DrainTimeout: time.Minute, Logger: quiet}, Source[int](q),
		func(context.Context, func()) Worker[int] {
			return runner{do: func(_ context.Context, j int) bool { got <- j; return false }}
		})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go p.Run(ctx)
	q.push(7)
	if j := <-got; j != 7 {
		t.Fatalf("ran job %d, want 7", j)
	}
}

// A claim that fails is retried; the jobs it returned run.
func TestPoolRetriesAFailedClaim(t *testing.T) {
	q := newQueue(3)
	q.fail = 2
	var mu sync.Mutex
	ran := 0
	all := make(chan struct{})
	p := New(Config{Workers: 1, DrainTimeout: time.Minute, Logger: quiet}, Source[int](q),
		func(context.Context, func()) Worker[int] {
			return runner{do: func(context.Context, int) bool {
				mu.Lock()
				defer mu.Unlock()
				if ran++; ran == 3 {
					close(all)
				}
				return false
			}}
		})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go p.Run(ctx)
	<-all
}

// Jobs claimed but not started when Run's context ends are given back.
func TestPoolGivesBackJobsNotStartedWhenStopping(t *testing.T) {
	q := newQueue(10)
	started := make(chan struct{})
	release := make(chan struct{})
	var ran atomic.Int32
	p := New(Config{Workers: 1, Buffer: 5, Batch: 6, DrainTimeout: time.Minute, Logger: quiet}, Source[int](q),
		func(context.Context, func()) Worker[int] {
			return runner{do: func(context.Context, int) bool {
				if ran.Add(1) == 1 {
					close(started)
				}
				<-release
				return false
			}}
		})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	<-started
	cancel()
	close(release)
	<-done
	q.mu.Lock()
	defer q.mu.Unlock()
	if r := int(ran.Load()); r+len(q.unclaimed)+len(q.jobs) != 10 || r != 1 {
		t.Fatalf("ran %d, gave back %v, left %d: want 1 run and every other claimed job given back", r, q.unclaimed, len(q.jobs))
	}
}

// Past DrainTimeout, the running jobs' context is cancelled.
func TestPoolCancelsJobsAfterDrainTimeout(t *testing.T) {
	q := newQueue(1)
	started := make(chan struct{})
	var cancelled atomic.Bool
	p := New(Config{Workers: 1, DrainTimeout: time.Millisecond, Logger: quiet}, Source[int](q),
		func(context.Context, func()) Worker[int] {
			return runner{do: func(ctx context.Context, _ int) bool {
				close(started)
				<-ctx.Done()
				cancelled.Store(true)
				return false
			}}
		})
	runUntil(p, started)
	if !cancelled.Load() {
		t.Fatal("Run returned before the job saw its context cancelled")
	}
}

// A worker that hands its goroutine to a replacement exits; the
// replacement frees its slot and carries on, and Run still waits for it.
func TestPoolReplacementCarriesOn(t *testing.T) {
	const jobs = 5
	q := newQueue(jobs)
	var mu sync.Mutex
	ran, workers := 0, 0
	all := make(chan struct{})
	p := New(Config{Workers: 1, DrainTimeout: time.Minute, Logger: quiet}, Source[int](q),
		func(_ context.Context, replace func()) Worker[int] {
			mu.Lock()
			workers++
			mu.Unlock()
			return runner{do: func(_ context.Context, j int) bool {
				mu.Lock()
				defer mu.Unlock()
				if ran++; ran == jobs {
					close(all)
				}
				if j == 1 {
					replace()
					return true
				}
				return false
			}}
		})
	runUntil(p, all)
	if workers != 2 {
		t.Fatalf("%d workers made; want the first and its replacement", workers)
	}
}

// With Active, a job that released its active slot finishes while the
// next jobs start: at most Active jobs are active at once, at most Workers
// run at once, every job runs once, and the claims ask only for active
// slots (and the buffer).
func TestPoolActiveJobsStartWhileOthersFinish(t *testing.T) {
	const jobs, workers, active = 300, 6, 2
	q := newQueue(jobs)
	var actives, running peak
	var mu sync.Mutex
	ran := map[int]int{}
	all := make(chan struct{})
	p := New(Config{Workers: workers, Active: active, Buffer: 2, Batch: 4, DrainTimeout: time.Minute, Logger: quiet},
		Source[int](q), func(context.Context, func()) Worker[int] {
			return runner{release: func(_ context.Context, j int, release func()) bool {
				running.add()
				actives.add()
				time.Sleep(50 * time.Microsecond)
				actives.done()
				release()
				release()                          // a second call is a no-op
				time.Sleep(200 * time.Microsecond) // finishing: writing a result
				mu.Lock()
				ran[j]++
				if len(ran) == jobs {
					close(all)
				}
				mu.Unlock()
				running.done()
				return false
			}}
		})
	runUntil(p, all)
	for j := range jobs {
		if ran[j] != 1 {
			t.Errorf("job %d ran %d times", j, ran[j])
		}
	}
	if m := actives.most.Load(); m > active {
		t.Errorf("%d jobs were active at once; Active is %d", m, active)
	}
	if m := running.most.Load(); m > workers {
		t.Errorf("%d jobs ran at once; Workers is %d", m, workers)
	}
	if m := running.most.Load(); m <= active {
		t.Errorf("at most %d jobs ran at once: none started while others finished", m)
	}
	for _, n := range q.claims {
		if n < 1 || n > active+2 {
			t.Errorf("a claim asked for %d jobs; there are %d active slots and a buffer of 2", n, active)
		}
	}
}

// A job that has released its slot lets the next one start though it has
// not returned; without Active (and one worker) it does not.
func TestPoolReleaseStartsTheNextJob(t *testing.T) {
	for _, active := range []int{1, 0} {
		q := newQueue(2)
		second := make(chan struct{})
		p := New(Config{Workers: 1 + active, Active: active, Batch: 1, DrainTimeout: time.Minute, Logger: quiet},
			Source[int](q), func(context.Context, func()) Worker[int] {
				return runner{release: func(_ context.Context, j int, release func()) bool {
					if j == 1 {
						close(second)
						return false
					}
					release()
					select { // the first waits for the second to start
					case <-second:
					case <-time.After(time.Second):
					}
					return false
				}}
			})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { p.Run(ctx); close(done) }()
		started := false
		select {
		case <-second:
			started = true
		case <-time.After(500 * time.Millisecond):
		}
		cancel()
		<-done
		if want := active > 0; started != want {
			t.Errorf("Active %d: the second job started while the first was running: %v; want %v", active, started, want)
		}
	}
}

// A worker replaced after releasing its job does not free the job's slot a
// second time: jobs never run beyond Active.
func TestPoolReplacementAfterRelease(t *testing.T) {
	const jobs = 40
	q := newQueue(jobs)
	var actives peak
	var ran atomic.Int32
	all := make(chan struct{})
	p := New(Config{Workers: 4, Active: 1, Batch: 1, DrainTimeout: time.Minute, Logger: quiet},
		Source[int](q), func(_ context.Context, replace func()) Worker[int] {
			return runner{release: func(_ context.Context, j int, release func()) bool {
				actives.add()
				time.Sleep(100 * time.Microsecond)
				actives.done()
				release()
				if ran.Add(1) == jobs {
					close(all)
				}
				if j%3 == 0 {
					replace()
					return true
				}
				return false
			}}
		})
	runUntil(p, all)
	if m := actives.most.Load(); m > 1 {
		t.Errorf("%d jobs were active at once after replacements; Active is 1", m)
	}
}

func TestBackoffDoublesToItsLimitAndResets(t *testing.T) {
	var b Backoff
	want := []time.Duration{100, 200, 400, 800, 1600, 3200, 5000, 5000}
	for i, w := range want {
		if d := b.Next(); d != w*time.Millisecond {
			t.Fatalf("delay %d is %v, want %v", i, d, w*time.Millisecond)
		}
	}
	b.Reset()
	if d := b.Peek(); d != 100*time.Millisecond {
		t.Fatalf("after Reset the delay is %v, want 100ms", d)
	}
}
