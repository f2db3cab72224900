// Command receiver is a buyer's webhook endpoint, a receive.Handler: it
// loads the seller's JWKS, verifies every inbound webhook's RFC 9421
// signature, de-duplicates by idempotency_key, and prints what it accepted
// and why it refused the rest.
//
//	go run ./examples/receiver -jwks seller-jwks.json -agent https://seller.example/mcp -addr :8080
//
// With -demo it instead makes a seller key, starts itself on loopback, sends
// itself a good webhook, one with a tampered body, a replay, the seller's
// retry and a changed payload under the same key, prints the verdicts and
// exits:
//
//	go run ./examples/receiver -demo
//
// Serving uses only the buyer's package, github.com/adcpkit/webhook/receive;
// the demo also imports the root package, to play the seller.
package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/adcpkit/webhook"
	"github.com/adcpkit/webhook/receive"
)

func main() {
	jwksPath := flag.String("jwks", "", "path to the seller's JWKS (JSON with a keys array)")
	agent := flag.String("agent", "", "the seller agent's URL: the sender identity that scopes de-duplication")
	addr := flag.String("addr", "127.0.0.1:8080", "address to listen on")
	demo := flag.Bool("demo", false, "run a self-contained demonstration and exit")
	flag.Parse()
	var err error
	if *demo {
		err = runDemo()
	} else {
		err = serve(*jwksPath, *agent, *addr)
	}
	if err != nil {
		log.Fatal(err)
	}
}

// handler is the buyer's endpoint: a receive.Handler (verification,
// de-duplication by idempotency_key) around a handler that prints what it
// accepted. The log says why the rest were refused.
func handler(v *receive.Verifier, out io.Writer) (http.Handler, error) {
	logger := slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey {
			return slog.Attr{}
		}
		return a
	}}))
	return receive.NewHandler(receive.HandlerConfig{
		Verifier: v,
		Dedup:    &receive.MemoryDedupStore{}, // one process; share receive/pgstore's across pods
		Logger:   logger,
	}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		wh, _ := receive.WebhookFrom(r.Context())
		fmt.Fprintf(out, "accepted %s: %d bytes from %s, idempotency_key %s\n", r.RequestURI, len(wh.Body), wh.Sender, wh.IdempotencyKey)
	}))
}

func serve(jwksPath, agent, addr string) error {
	if jwksPath == "" {
		return errors.New("give the seller's JWKS with -jwks and its agent URL with -agent, or run -demo")
	}
	data, err := os.ReadFile(jwksPath)
	if err != nil {
		return err
	}
	keys, err := receive.ParseJWKS(data)
	if err != nil {
		return err
	}
	v, err := receive.NewVerifier(receive.VerifierConfig{Agent: agent, Keys: keys})
	if err != nil {
		return err
	}
	h, err := handler(v, os.Stdout)
	if err != nil {
		return err
	}
	log.Printf("receiving webhooks from %s, signed by %d key(s), on http://%s", agent, len(keys), addr)
	srv := &http.Server{Addr: addr, Handler: h, ReadHeaderTimeout: 10 * time.Second}
	return srv.ListenAndServe()
}

func runDemo() error {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	key, err := webhook.NewSigningKey("demo-seller-2026", priv)
	if err != nil {
		return err
	}
	jwk, err := key.PublicJWK()
	if err != nil {
		return err
	}
	keys, err := receive.ParseJWKS([]byte(`{"keys":[` + string(jwk) + `]}`))
	if err != nil {
		return err
	}
	v, err := receive.NewVerifier(receive.VerifierConfig{Agent: "https://seller.example/mcp", Keys: keys})
	if err != nil {
		return err
	}
	h, err := handler(v, os.Stdout)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Shutdown(context.Background())

	signer, err := webhook.NewRFC9421Signer(webhook.SignerConfig{Key: key})
	if err != nil {
		return err
	}
	url := "http://" + ln.Addr().String() + "/adcp/webhook"
	body, _, err := webhook.BuildMCPBody(webhook.MCPWebhook{OperationID: "op_1", TaskID: "task_1",
		TaskType: webhook.TaskCreateMediaBuy, Status: webhook.StatusCompleted}, time.Now())
	if err != nil {
		return err
	}
	post := func(what string, sendBody []byte, header http.Header) error {
		req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(string(sendBody)))
		if err != nil {
			return err
		}
		req.Header = header.Clone()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		fmt.Printf("  -> %s: HTTP %d %s\n", what, resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
		return nil
	}
	sign := func(b []byte) (http.Header, error) {
		r, _ := http.NewRequest(http.MethodPost, url, nil)
		return r.Header, signer.Sign(r, b)
	}
	signed, err := sign(body)
	if err != nil {
		return err
	}
	retry, err := sign(body) // the seller's retry: the same body, signed afresh
	if err != nil {
		return err
	}
	var sent struct {
		IdempotencyKey string `json:"idempotency_key"`
	}
	_ = json.Unmarshal(body, &sent)
	changedBody, _, err := webhook.BuildMCPBody(webhook.MCPWebhook{OperationID: "op_1", TaskID: "task_1", IdempotencyKey: sent.IdempotencyKey,
		TaskType: webhook.TaskCreateMediaBuy, Status: webhook.StatusFailed}, time.Now())
	if err != nil {
		return err
	}
	changed, err := sign(changedBody)
	if err != nil {
		return err
	}
	for _, c := range []struct {
		what   string
		body   []byte
		header http.Header
	}{
		{"a signed webhook", body, signed},
		{"the same headers with a tampered body", []byte(strings.Replace(string(body), "completed", "canceled", 1)), signed},
		{"the signed webhook again (a replay)", body, signed},
		{"the seller's retry, signed afresh (a duplicate)", body, retry},
		{"another payload under the same idempotency_key", changedBody, changed},
	} {
		if err := post(c.what, c.body, c.header); err != nil {
			return err
		}
	}
	return nil
}
