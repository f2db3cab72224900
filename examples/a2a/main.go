// Command a2a serves A2A (github.com/a2aproject/a2a-go) with its tasks and
// push notification configs in Postgres, and hands every push to a durable
// webhook.PostgresSupervisor, so A2A pushes are signed (RFC 9421), retried
// and logged like MCP webhooks. The demo starts an A2A JSON-RPC server and a
// buyer endpoint on loopback, sends the agent a non-blocking message whose
// push notification config points at the buyer, and waits for the buyer to
// receive, and verify, the push saying the task completed. It prints what
// arrived and the supervisor's attempt log, and exits in a few seconds.
//
//	cd examples/a2a && go run .
//	DATABASE_URL=postgres://user:pass@host/db go run .
//
// Without DATABASE_URL it starts a throwaway PostgreSQL from the initdb and
// postgres binaries on PATH or under /usr/lib/postgresql/*/bin (Debian:
// apt-get install postgresql), on a free loopback port, and removes it at
// exit. With DATABASE_URL it creates its tables there if they are missing,
// and leaves this run's rows behind.
package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"regexp"
	"sync"
	"time"

	"github.com/a2aproject/a2a-go/a2a"
	"github.com/a2aproject/a2a-go/a2asrv"
	"github.com/a2aproject/a2a-go/a2asrv/eventqueue"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/adcpkit/webhook"
	"github.com/adcpkit/webhook/receive"
	"github.com/adcpkit/webhook/webhooktest"
)

func main() {
	if err := run(); err != nil {
		log.Fatal(err)
	}
}

func run() error {
	ctx, stop := context.WithCancel(context.Background())
	defer stop()

	// The database: DATABASE_URL, or (in this example only: see
	// database.go) a throwaway cluster of its own.
	dbURL, stopDB, err := databaseURL()
	if err != nil {
		return err
	}
	defer stopDB()
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		return err
	}
	defer pool.Close()
	if err := CreateSchema(ctx, pool); err != nil {
		return fmt.Errorf("creating the A2A stores' tables: %w", err)
	}

	// The seller's signing key. A real seller loads its own and publishes
	// the public half (key.PublicJWK) in its JWKS; the demo makes one.
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	key, err := webhook.NewSigningKey("a2a-demo-2026", priv)
	if err != nil {
		return err
	}

	// The buyer: an endpoint on loopback that verifies every request
	// against the seller's public key.
	verifier, err := receive.NewVerifier(receive.VerifierConfig{Keys: []receive.VerifyingKey{key.VerifyingKey()}})
	if err != nil {
		return err
	}
	buyer := webhooktest.NewReceiver(webhooktest.Config{Verifier: verifier})
	defer buyer.Close()

	// The seller's delivery side: a signing sender and the Postgres
	// supervisor, whose worker runs until the end of the demo.
	signer, err := webhook.NewRFC9421Signer(webhook.SignerConfig{Key: key})
	if err != nil {
		return err
	}
	sender, err := webhook.NewHTTPSender(webhook.HTTPSenderConfig{
		Signer:      signer,
		Timeout:     2 * time.Second,
		Development: true, // local buyers: loopback, plain http (never in production)
	})
	if err != nil {
		return err
	}
	sup, err := webhook.NewPostgresSupervisor(pool, sender, webhook.PostgresConfig{
		Retry: webhook.RetryPolicy{MaxAttempts: 3, BaseDelay: 200 * time.Millisecond, MaxDelay: time.Second},
	})
	if err != nil {
		return err
	}
	if err := sup.CreateSchema(ctx); err != nil {
		return err
	}
	workerCtx, stopWorker := context.WithCancel(ctx)
	defer stopWorker()
	worker := make(chan error, 1)
	go func() { worker <- sup.RunWorker(workerCtx) }()

	// The seller's A2A server: tasks and push configs in Postgres, pushes
	// through the supervisor. (recorder only notes the delivery IDs, so the
	// demo can print their attempts at the end.)
	rec := &recorder{Supervisor: sup}
	handler := a2asrv.NewHandler(completer{},
		a2asrv.WithTaskStore(NewTaskStore(pool)),
		a2asrv.WithPushNotifications(NewPushConfigStore(pool), NewPushSender(rec)),
	)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: a2asrv.NewJSONRPCHandler(handler), ReadHeaderTimeout: 5 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	agentURL := "http://" + ln.Addr().String()
	fmt.Printf("A2A server on %s, buyer endpoint on %s\n", agentURL, buyer.URL)

	// The buyer as A2A client: a non-blocking message/send whose push
	// config points at its endpoint. The answer comes at once; the task's
	// completion arrives by push.
	pushURL := buyer.URL + "/a2a/push"
	blocking := false
	task, err := sendMessage(ctx, agentURL, &a2a.MessageSendParams{
		Message: a2a.NewMessage(a2a.MessageRoleUser, a2a.TextPart{Text: "create a media buy"}),
		Config: &a2a.MessageSendConfig{
			Blocking:   &blocking,
			PushConfig: &a2a.PushConfig{URL: pushURL},
		},
	})
	if err != nil {
		return fmt.Errorf("message/send: %w", err)
	}
	fmt.Printf("message/send answered: task %s, state %s\n", task.ID, task.Status.State)

	// Wait, at most 15s, for the verified push saying the task completed.
	waitCtx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	got, err := waitForCompleted(waitCtx, buyer, task.ID)
	if err != nil {
		return err
	}
	fmt.Println()
	for _, d := range got {
		var t a2a.Task
		_ = json.Unmarshal(d.Body, &t)
		verified := "verified"
		if d.VerifyErr != nil {
			verified = "NOT verified: " + d.VerifyErr.Error()
		}
		fmt.Printf("buyer received %s %s: task %s, state %-9s signed with key %s, %s\n",
			d.Method, d.URI, t.ID, t.Status.State+",", keyID(d.Header.Get("Signature-Input")), verified)
	}

	// The supervisor's record of each push: the attempt log in Postgres.
	// (A non-2xx would have been retried; the demo's buyer answers 200.)
	fmt.Println()
	for _, r := range rec.receipts() {
		d, err := waitFinal(waitCtx, sup, r.ID)
		if err != nil {
			return err
		}
		as, err := sup.Attempts(ctx, r.ID)
		if err != nil {
			return err
		}
		fmt.Printf("delivery %s  %s after %d attempt(s)\n", d.ID, d.State, d.Attempts)
		for _, a := range as {
			fmt.Printf("  attempt %d/%d  %-7s HTTP %d in %v  %s\n", a.AttemptNumber, a.MaxAttempts,
				a.Outcome, a.HTTPStatus, a.ResponseTime.Round(time.Microsecond), a.URL)
		}
	}

	// Stop the A2A server, then the worker; the deferred calls close the
	// buyer, the pool and the throwaway database.
	shutCtx, cancelShut := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancelShut()
	if err := srv.Shutdown(shutCtx); err != nil {
		return fmt.Errorf("stopping the A2A server: %w", err)
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	stopWorker()
	if err := <-worker; err != nil {
		return fmt.Errorf("worker: %w", err)
	}
	fmt.Println("\nstopped the A2A server and the worker; done")
	return nil
}

// completer is an a2asrv.AgentExecutor that completes every task at once:
// working, then completed with a reply.
type completer struct{}

func (completer) Execute(ctx context.Context, reqCtx *a2asrv.RequestContext, q eventqueue.Queue) error {
	if err := q.Write(ctx, a2a.NewStatusUpdateEvent(reqCtx, a2a.TaskStateWorking, nil)); err != nil {
		return err
	}
	reply := a2a.NewMessageForTask(a2a.MessageRoleAgent, reqCtx, a2a.TextPart{Text: "done"})
	done := a2a.NewStatusUpdateEvent(reqCtx, a2a.TaskStateCompleted, reply)
	done.Final = true
	return q.Write(ctx, done)
}

func (completer) Cancel(ctx context.Context, reqCtx *a2asrv.RequestContext, q eventqueue.Queue) error {
	ev := a2a.NewStatusUpdateEvent(reqCtx, a2a.TaskStateCanceled, nil)
	ev.Final = true
	return q.Write(ctx, ev)
}

// recorder is a webhook.Supervisor that notes the receipts of the webhooks
// handed to it.
type recorder struct {
	webhook.Supervisor
	mu   sync.Mutex
	list []webhook.Receipt
}

func (r *recorder) SendPrepared(ctx context.Context, w webhook.PreparedWebhook) (webhook.Receipt, error) {
	rc, err := r.Supervisor.SendPrepared(ctx, w)
	if err == nil {
		r.mu.Lock()
		r.list = append(r.list, rc)
		r.mu.Unlock()
	}
	return rc, err
}

func (r *recorder) receipts() []webhook.Receipt {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]webhook.Receipt(nil), r.list...)
}

// sendMessage calls message/send over plain JSON-RPC and returns the task
// it answers with. (a2aclient would do too, but pulls in gRPC.)
func sendMessage(ctx context.Context, url string, params *a2a.MessageSendParams) (*a2a.Task, error) {
	body, err := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": 1, "method": "message/send", "params": params})
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	var answer struct {
		Result *a2a.Task `json:"result"`
		Error  *struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal(raw, &answer); err != nil {
		return nil, fmt.Errorf("decoding the answer %q: %w", raw, err)
	}
	if answer.Error != nil {
		return nil, fmt.Errorf("JSON-RPC error %d: %s", answer.Error.Code, answer.Error.Message)
	}
	if answer.Result == nil || answer.Result.ID == "" {
		return nil, fmt.Errorf("the answer is not a task: %s", raw)
	}
	return answer.Result, nil
}

// waitForCompleted waits for the buyer to receive a verified push saying
// task id completed, and returns everything the buyer received by then.
func waitForCompleted(ctx context.Context, buyer *webhooktest.Receiver, id a2a.TaskID) ([]webhooktest.Delivery, error) {
	for {
		all := buyer.Deliveries()
		for _, d := range all {
			var t a2a.Task
			if d.VerifyErr == nil && json.Unmarshal(d.Body, &t) == nil && t.ID == id && t.Status.State == a2a.TaskStateCompleted {
				return all, nil
			}
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("no verified push saying task %s completed within 15s (the buyer received %d request(s))", id, len(all))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// waitFinal waits for delivery id to be delivered or failed.
func waitFinal(ctx context.Context, sup *webhook.PostgresSupervisor, id string) (webhook.Delivery, error) {
	for {
		d, err := sup.Delivery(ctx, id)
		if err != nil || d.State.Final() {
			return d, err
		}
		select {
		case <-ctx.Done():
			return d, fmt.Errorf("delivery %s still %s after %d attempt(s) at the deadline", id, d.State, d.Attempts)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

var keyIDParam = regexp.MustCompile(`keyid="([^"]*)"`)

// keyID returns the keyid parameter of a Signature-Input header.
func keyID(signatureInput string) string {
	if m := keyIDParam.FindStringSubmatch(signatureInput); m != nil {
		return m[1]
	}
	return "(none)"
}
