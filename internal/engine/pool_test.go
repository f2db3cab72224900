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
type runner struct {
	do func(ctx context.Context, j int) bool
}

func (r runner) Run(ctx context.Context, j int) bool { return r.do(ctx, j) }
func (r runner) Stop()                               {}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func TestPoolRunsEveryJobOnceWithinItsWorkers(t *testing.T) {
	const jobs, workers = 200, 4
	q := newQueue(jobs)
	var running, most atomic.Int32
	var mu sync.Mutex
	ran := map[int]int{}
	all := make(chan struct{})
	p := New(Config{Workers: workers, Buffer: 8, Batch: 8, BacklogBatch: 4, DrainTimeout: time.Minute, Logger: quiet},
		Source[int](q), func(context.Context, func()) Worker[int] {
			return runner{func(_ context.Context, j int) bool {
				n := running.Add(1)
				for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
				}
				mu.Lock()
				ran[j]++
				if len(ran) == jobs {
					close(all)
				}
				mu.Unlock()
				running.Add(-1)
				return false
			}}
		})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	<-all
	cancel()
	<-done
	for j, n := range ran {
		if n != 1 {
			t.Errorf("job %d ran %d times", j, n)
		}
	}
	if m := most.Load(); m > workers {
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
			return runner{func(context.Context, int) bool {
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
			return runner{func(_ context.Context, j int) bool { got <- j; return false }}
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
			return runner{func(context.Context, int) bool {
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
			return runner{func(context.Context, int) bool {
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
			return runner{func(ctx context.Context, _ int) bool {
				close(started)
				<-ctx.Done()
				cancelled.Store(true)
				return false
			}}
		})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	<-started
	cancel()
	<-done
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
			return runner{func(_ context.Context, j int) bool {
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
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	<-all
	cancel()
	<-done
	if workers != 2 {
		t.Fatalf("%d workers made; want the first and its replacement", workers)
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
