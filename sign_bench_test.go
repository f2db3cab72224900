package webhook

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/adcpkit/webhook/receive"
)

// BenchmarkSign and BenchmarkVerify measure the cost of the RFC 9421
// webhook signature per request, for both algorithms, on a typical body.
//
//	go test -run '^$' -bench 'Benchmark(Sign|Verify)' -benchmem
func BenchmarkSign(b *testing.B) {
	for _, s := range benchSigners(b) {
		body := benchBody(b)
		b.Run(s.key.Algorithm(), func(b *testing.B) {
			b.ReportAllocs()
			req, _ := http.NewRequest(http.MethodPost, "https://buyer.example.com/adcp/webhook/op_abc", nil)
			for b.Loop() {
				if err := s.Sign(req, body); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkVerify(b *testing.B) {
	for _, s := range benchSigners(b) {
		body := benchBody(b)
		url := "https://buyer.example.com/adcp/webhook/op_abc"
		req, _ := http.NewRequest(http.MethodPost, url, nil)
		if err := s.Sign(req, body); err != nil {
			b.Fatal(err)
		}
		b.Run(s.key.Algorithm(), func(b *testing.B) {
			// A nonce store that never remembers, so one signed request can
			// be verified over and over.
			v, err := receive.NewVerifier(receive.VerifierConfig{Keys: []receive.VerifyingKey{s.key.VerifyingKey()}, Nonces: forgetfulNonces{}})
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := v.Verify(context.Background(), http.MethodPost, url, req.Header, body); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// benchSigners returns signers for the conformance Ed25519 and ES256 keys.
func benchSigners(b *testing.B) []*RFC9421Signer {
	var out []*RFC9421Signer
	for _, kid := range []string{"test-ed25519-webhook-2026", "test-es256-webhook-2026"} {
		key, err := ParseJWKSigningKey(testKeysB(b)[kid])
		if err != nil {
			b.Fatal(err)
		}
		s, err := NewRFC9421Signer(SignerConfig{Key: key})
		if err != nil {
			b.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

type forgetfulNonces struct{}

func (forgetfulNonces) Use(context.Context, string, string, time.Time, time.Time) (receive.NonceVerdict, error) {
	return receive.NonceFresh, nil
}

func benchBody(b *testing.B) []byte {
	body, _, err := BuildMCPBody(MCPWebhook{OperationID: "op_abc", TaskID: "task_456", TaskType: TaskCreateMediaBuy,
		Status: StatusCompleted, Result: map[string]any{"media_buy_id": "mb_001", "packages": []string{"pkg_1", "pkg_2"}}}, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	return body
}
