// Command receiver is a buyer's webhook endpoint: it loads the seller's
// JWKS, verifies every inbound webhook's RFC 9421 signature, and prints
// what it accepted and why it rejected the rest.
//
//	go run ./examples/receiver -jwks seller-jwks.json -addr :8080
//
// With -demo it instead makes a seller key, starts itself on loopback, sends
// itself one good webhook, one with a tampered body and one replay, prints
// the verdicts and exits:
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
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
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
	addr := flag.String("addr", "127.0.0.1:8080", "address to listen on")
	demo := flag.Bool("demo", false, "run a self-contained demonstration and exit")
	flag.Parse()
	var err error
	if *demo {
		err = runDemo()
	} else {
		err = serve(*jwksPath, *addr)
	}
	if err != nil {
		log.Fatal(err)
	}
}

// handler verifies each webhook and answers as AdCP receivers must: 2xx for
// a good one, 401 with the error code for a bad signature.
func handler(v *receive.Verifier, out io.Writer) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, receive.MaxBodyBytes+1))
		if err != nil || len(body) > receive.MaxBodyBytes {
			http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
			return
		}
		sig, err := v.VerifyRequest(r, body)
		if err != nil {
			var ve *receive.VerifyError
			if errors.As(err, &ve) {
				w.Header().Set("WWW-Authenticate", `Signature error="`+ve.Code+`"`)
				fmt.Fprintf(out, "rejected %s %s: %s (step %d: %s)\n", r.Method, r.RequestURI, ve.Code, ve.Step, ve.Reason)
			} else {
				fmt.Fprintf(out, "rejected %s %s: %v\n", r.Method, r.RequestURI, err)
			}
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		fmt.Fprintf(out, "accepted %s %s: %d bytes, signed by %s\n", r.Method, r.RequestURI, len(body), sig.KeyID)
		w.WriteHeader(http.StatusOK)
	})
}

func serve(jwksPath, addr string) error {
	if jwksPath == "" {
		return errors.New("give the seller's JWKS with -jwks, or run -demo")
	}
	data, err := os.ReadFile(jwksPath)
	if err != nil {
		return err
	}
	keys, err := receive.ParseJWKS(data)
	if err != nil {
		return err
	}
	v, err := receive.NewVerifier(receive.VerifierConfig{Keys: keys})
	if err != nil {
		return err
	}
	log.Printf("verifying webhooks signed by %d key(s) on http://%s", len(keys), addr)
	srv := &http.Server{Addr: addr, Handler: handler(v, os.Stdout), ReadHeaderTimeout: 10 * time.Second}
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
	v, err := receive.NewVerifier(receive.VerifierConfig{Keys: keys})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: handler(v, os.Stdout), ReadHeaderTimeout: 10 * time.Second}
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
	signed, _ := http.NewRequest(http.MethodPost, url, nil)
	if err := signer.Sign(signed, body); err != nil {
		return err
	}
	for _, c := range []struct {
		what string
		body []byte
	}{
		{"a signed webhook", body},
		{"the same headers with a tampered body", []byte(strings.Replace(string(body), "completed", "canceled", 1))},
		{"the signed webhook again (a replay)", body},
	} {
		if err := post(c.what, c.body, signed.Header); err != nil {
			return err
		}
	}
	return nil
}
