package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/a2aproject/a2a-go/a2a"
	"github.com/a2aproject/a2a-go/a2asrv/push"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/adcpkit/webhook"
	"github.com/adcpkit/webhook/internal/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

func newPool(t *testing.T) *pgxpool.Pool {
	pool := pgtest.New(t)
	require.NoError(t, CreateSchema(context.Background(), pool))
	require.NoError(t, CreateSchema(context.Background(), pool), "idempotent")
	return pool
}

func TestTaskStore(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := NewTaskStore(newPool(t))
	_, err := s.Get(ctx, "missing")
	require.ErrorIs(t, err, a2a.ErrTaskNotFound)

	task := &a2a.Task{ID: "task-1", ContextID: "ctx-1", Status: a2a.TaskStatus{State: a2a.TaskStateSubmitted},
		Metadata: map[string]any{"media_buy_id": "mb_1"}}
	require.NoError(t, s.Save(ctx, task))
	got, err := s.Get(ctx, "task-1")
	require.NoError(t, err)
	require.Equal(t, task, got)

	task.Status.State = a2a.TaskStateCompleted
	require.NoError(t, s.Save(ctx, task))
	got, err = s.Get(ctx, "task-1")
	require.NoError(t, err)
	require.Equal(t, a2a.TaskStateCompleted, got.Status.State, "Save replaces")

	require.ErrorIs(t, s.Save(ctx, &a2a.Task{}), a2a.ErrInvalidParams)

	// Concurrent saves of one task: the last one wins, none fails.
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			require.NoError(t, s.Save(ctx, &a2a.Task{ID: "task-2", ContextID: fmt.Sprint("ctx-", i)}))
		})
	}
	wg.Wait()
	_, err = s.Get(ctx, "task-2")
	require.NoError(t, err)
}

func TestPushConfigStore(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := NewPushConfigStore(newPool(t))
	list, err := s.List(ctx, "task-1")
	require.NoError(t, err)
	require.Empty(t, list)
	require.NotNil(t, list)
	_, err = s.Get(ctx, "task-1", "nope")
	require.ErrorIs(t, err, push.ErrPushConfigNotFound)

	a, err := s.Save(ctx, "task-1", &a2a.PushConfig{URL: "https://buyer.example/a", Token: "tok-a"})
	require.NoError(t, err)
	require.NotEmpty(t, a.ID, "the store generates an ID")
	b, err := s.Save(ctx, "task-1", &a2a.PushConfig{ID: "mine", URL: "https://buyer.example/b",
		Auth: &a2a.PushAuthInfo{Schemes: []string{"Bearer"}, Credentials: "secret"}})
	require.NoError(t, err)
	require.Equal(t, "mine", b.ID)
	other, err := s.Save(ctx, "task-2", &a2a.PushConfig{URL: "https://buyer.example/c"})
	require.NoError(t, err)
	require.NotEqual(t, a.ID, other.ID)

	got, err := s.Get(ctx, "task-1", "mine")
	require.NoError(t, err)
	require.Equal(t, b, got)
	list, err = s.List(ctx, "task-1")
	require.NoError(t, err)
	require.Len(t, list, 2)

	b.URL = "https://buyer.example/b2"
	_, err = s.Save(ctx, "task-1", b)
	require.NoError(t, err)
	got, err = s.Get(ctx, "task-1", "mine")
	require.NoError(t, err)
	require.Equal(t, "https://buyer.example/b2", got.URL, "Save with an ID replaces")

	require.NoError(t, s.Delete(ctx, "task-1", a.ID))
	require.NoError(t, s.Delete(ctx, "task-1", a.ID), "deleting twice is fine")
	list, err = s.List(ctx, "task-1")
	require.NoError(t, err)
	require.Len(t, list, 1)
	require.NoError(t, s.DeleteAll(ctx, "task-1"))
	list, err = s.List(ctx, "task-1")
	require.NoError(t, err)
	require.Empty(t, list)
	list, err = s.List(ctx, "task-2")
	require.NoError(t, err)
	require.Len(t, list, 1, "other tasks' configs stay")
}

func TestPushGoesThroughTheSupervisorAndIsRetried(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	var mu sync.Mutex
	var bodies [][]byte
	var auths, tokens []string
	calls := 0
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var b [4096]byte
		n, _ := r.Body.Read(b[:])
		mu.Lock()
		defer mu.Unlock()
		bodies = append(bodies, append([]byte(nil), b[:n]...))
		auths = append(auths, r.Header.Get("Authorization"))
		tokens = append(tokens, r.Header.Get("X-A2A-Notification-Token"))
		if calls++; calls == 1 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(recv.Close)
	sender, err := webhook.NewHTTPSender(webhook.HTTPSenderConfig{AllowPrivateDestinations: true})
	require.NoError(t, err)
	pool := newPool(t)
	sup, err := webhook.NewPostgresSupervisor(pool, sender, webhook.PostgresConfig{
		AllowInsecureHTTP: true, Retry: webhook.RetryPolicy{BaseDelay: 10 * time.Millisecond, MaxDelay: 10 * time.Millisecond},
	})
	require.NoError(t, err)
	require.NoError(t, sup.CreateSchema(ctx))
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- sup.RunWorker(wctx) }()
	t.Cleanup(func() { cancel(); require.NoError(t, <-done) })

	task := &a2a.Task{ID: "task-1", ContextID: "ctx-1", Status: a2a.TaskStatus{State: a2a.TaskStateCompleted}}
	cfg := &a2a.PushConfig{URL: recv.URL + "/a2a", Token: "buyer-token-0001", Auth: &a2a.PushAuthInfo{Schemes: []string{"Bearer"},
		Credentials: "0123456789abcdef0123456789abcdef"}}
	require.NoError(t, NewPushSender(sup).SendPush(ctx, cfg, task))
	require.Eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(bodies) == 2 }, 20*time.Second, 10*time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, bodies[0], bodies[1], "the retry sends the same bytes")
	var sent a2a.Task
	require.NoError(t, json.Unmarshal(bodies[0], &sent))
	require.Equal(t, task.ID, sent.ID)
	require.Equal(t, "Bearer 0123456789abcdef0123456789abcdef", auths[1])
	require.Equal(t, []string{"buyer-token-0001", "buyer-token-0001"}, tokens, "the token goes with every attempt")
	var attempts, keys int
	require.Eventually(t, func() bool {
		return pool.QueryRow(ctx, `SELECT count(*), count(DISTINCT idempotency_key) FROM adcp_webhook_attempts`).Scan(&attempts, &keys) == nil && attempts == 2
	}, 20*time.Second, 10*time.Millisecond)
	require.Equal(t, 1, keys, "both attempts under one idempotency key")
}
