package webhook

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestSecretsUnderEveryVerb prints every type that carries a secret, by
// value and by pointer, alone and nested in another struct, under every
// fmt verb and flag, and looks for the secret in any encoding fmt could
// use. (%p of a non-pointer is skipped for the types whose secrets are
// exported fields: fmt prints such a value raw, bypassing Format, and go
// vet reports the call.)
func TestSecretsUnderEveryVerb(t *testing.T) {
	t.Parallel()
	seed := make([]byte, ed25519.SeedSize)
	for i := range seed {
		seed[i] = byte(0xa0 + i)
	}
	edKey, err := NewSigningKey("ed-kid", ed25519.NewKeyFromSeed(seed))
	require.NoError(t, err)
	ecPriv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	ecKey, err := NewSigningKey("ec-kid", ecPriv)
	require.NoError(t, err)
	signer, err := NewRFC9421Signer(SignerConfig{Key: edKey})
	require.NoError(t, err)

	const (
		cred  = "Zq8-uR2_kL5.mN7~pX4+wV1/cB9=jH3dF6"
		token = "mcp-token-0123456789abcdef"
		hdr   = "hdr-tok-8e7d6c5b4a"
		query = "qtok4f9d2c7e1b"
		path  = "p8Kx2Lm9Qr4St7Uv1Wx3Yz5Ab"
	)
	url := "https://buyer.example/hooks/" + path + "?token=" + query
	auth := &Authentication{Scheme: AuthBearer, Credentials: cred}
	routing := Routing{Authentication: auth, Headers: map[string]string{"X-Tenant-Token": hdr}, BreakerKey: url}
	body := []byte(`{"token":"` + token + `"}`)
	secrets := []string{cred, token, hdr, query, path}
	for _, b := range [][]byte{edKey.key.Signer.(ed25519.PrivateKey), ecPriv.D.Bytes()} {
		secrets = append(secrets, string(b[:8]), hex.EncodeToString(b[:8]), strings.ToUpper(hex.EncodeToString(b[:8])),
			base64.StdEncoding.EncodeToString(b[:9]), strings.Trim(fmt.Sprint(b[:4]), "[]"), fmt.Sprintf("%o", b[:3]), ecPriv.D.String()[:12])
	}
	for _, s := range []string{cred, token, hdr, query} {
		secrets = append(secrets, hex.EncodeToString([]byte(s[:8])), fmt.Sprintf("% x", s[:8]), strings.Trim(fmt.Sprint([]byte(s[:4])), "[]"))
	}

	type nest struct {
		Inner any
		inner any
	}
	values := map[string]any{
		"SigningKey":      *edKey,
		"*SigningKey":     edKey,
		"ECDSA key":       *ecKey,
		"RFC9421Signer":   *signer,
		"*RFC9421Signer":  signer,
		"Authentication":  *auth,
		"*Authentication": auth,
		"Routing":         routing,
		"MCPWebhook":      MCPWebhook{URL: url, Token: token, Routing: routing, Result: map[string]string{"t": token}, Timestamp: time.Now()},
		"PreparedWebhook": PreparedWebhook{URL: url, Body: body, Routing: routing},
		"Request":         Request{URL: url, Body: body, Authentication: auth, Headers: routing.Headers},
		"*Request":        &Request{URL: url, Body: body, Authentication: auth, Headers: routing.Headers},
		"Delivery":        Delivery{URL: url, Body: body, BreakerKey: url, LastError: "HTTP 500 Internal Server Error"},
		"nested key":      nest{Inner: edKey, inner: edKey},
		"nested signer":   nest{Inner: *signer, inner: signer},
		"nested webhook":  nest{Inner: MCPWebhook{URL: url, Token: token, Routing: routing}},
	}
	rawOnP := map[string]bool{"Authentication": true, "Routing": true, "MCPWebhook": true, "PreparedWebhook": true,
		"Request": true, "Delivery": true, "nested webhook": true, "nested key": true, "nested signer": true}
	for name, v := range values {
		for _, verb := range "vTtbcdoOqxXUeEfFgGsp" {
			if verb == 'p' && rawOnP[name] {
				continue
			}
			for _, flags := range []string{"", "+", "#", " ", "-", "0"} {
				format := "%" + flags + string(verb)
				out := fmt.Sprintf(format, v)
				for _, s := range secrets {
					if strings.Contains(out, s) {
						t.Errorf("%s printed with %s shows a secret (%q): %.300s", name, format, s, out)
					}
				}
			}
		}
	}
}

func TestLoggableURL(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"https://buyer.example/hook":                            "https://buyer.example/hook",
		"https://buyer.example/hook?token=abc#frag":             "https://buyer.example/hook",
		"https://user:pw@buyer.example:8443/a/b?x=1":            "https://buyer.example:8443/a/b",
		"https://buyer.example/hooks/p8Kx2Lm9Qr4St7Uv1Wx3Yz5Ab": "https://buyer.example/hooks/<redacted>",
		"https://buyer.example/op_abc/create_media_buy":         "https://buyer.example/op_abc/create_media_buy",
		"https://buyer.example/01HW9D3H8FZP2N6R8T0V4X6Z9B":      "https://buyer.example/<redacted>",
		"tenant-a":         "tenant-a",
		"shared?secret=1":  "shared",
		"not a url#frag":   "not a url",
		"http://127.0.0.1": "http://127.0.0.1",
		"https://buyer.example/hooks/eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U": "https://buyer.example/hooks/<redacted>",
		"https://buyer.example/hooks/q3Zk8+Jx0pL2mN4oP6qR8sT0uV2w=":                                                        "https://buyer.example/hooks/<redacted>",
		"https://buyer.example/hooks;token=Tk7qWm2Lx9/a":                                                                   "https://buyer.example/hooks/a",
		"https://Bücher.example/hook":                                                                                      "https://xn--bcher-kva.example/hook",
		"https://ex\u00adample.com/h":                                                                                      "https://example.com/h",
		"https://buyer.example/2026-12-03/report":                                                                          "https://buyer.example/2026-12-03/report",
	} {
		require.Equal(t, want, LoggableURL(in), in)
	}
}

// TestScrubEveryForm: a Sender's error that echoes a secret in any of the
// encodings an HTTP client or a formatter produces is scrubbed, and a long
// secret is not cut in half before it is.
func TestScrubEveryForm(t *testing.T) {
	t.Parallel()
	token := `tok&<en>"0123456789abcdef`
	creds := `Cr3d"ent\\ials-0123456789abcdefXYZ`
	longToken := strings.Repeat("\U0001F600", 4000)
	w := MCPWebhook{URL: "https://buyer.example/hook?token=abc%2Bdef%2F123&x=1", OperationID: "op", TaskID: "t", TaskType: TaskLogEvent,
		Status: StatusCompleted, Token: token, Routing: Routing{Authentication: &Authentication{Scheme: AuthBearer, Credentials: creds}}}
	d, err := urlPolicy{}.prepareMCP(w, at)
	require.NoError(t, err)
	for _, echo := range []string{
		fmt.Sprintf("upstream refused %s with auth %q", d.body, creds),
		"token abc%2bdef%2f123 refused", "token abc%2Bdef%2F123 refused", "token abc+def/123 refused",
		"query token=abc%2Bdef%2F123&x=1", "creds " + url.QueryEscape(creds),
	} {
		got := d.errorText(errors.New(echo))
		for _, s := range []string{token, creds, "abc+def/123", "abc%2Bdef", "abc%2bdef", "0123456789abcdef"} {
			require.NotContains(t, got, s, "from %q", echo)
		}
	}
	w.Token = longToken
	d, err = urlPolicy{}.prepareMCP(w, at)
	require.NoError(t, err)
	got := d.errorText(errors.New(strings.Repeat("x", 300) + string(d.body)))
	require.NotContains(t, got, "\U0001F600\U0001F600", "no part of a long token survives the cut")
}

type nilError struct{}

func (*nilError) Error() string { panic("typed nil") }

// TestErrorStringContainsPanics: a typed-nil error does not take the
// process down.
func TestErrorStringContainsPanics(t *testing.T) {
	t.Parallel()
	var e *nilError
	require.Contains(t, errorString(e), "*webhook.nilError")
	d, err := urlPolicy{}.prepareMCP(MCPWebhook{URL: "https://b.example/", OperationID: "o", TaskID: "t", TaskType: TaskLogEvent, Status: StatusCompleted}, at)
	require.NoError(t, err)
	require.Contains(t, d.errorText(e), "Error method panicked")
}

// TestSecretsUnderSlog: slog's JSON handler logs the redacted form.
func TestSecretsUnderSlog(t *testing.T) {
	t.Parallel()
	const token, hdr, query = "mcp-token-0123456789abcdef", "hdr-tok-8e7d6c5b4a", "qtok4f9d2c7e1b"
	url := "https://buyer.example/hook?token=" + query
	auth := &Authentication{Scheme: AuthBearer, Credentials: "Zq8-uR2_kL5.mN7~pX4+wV1/cB9=jH3dF6"}
	routing := Routing{Authentication: auth, Headers: map[string]string{"X-T": hdr}}
	var b strings.Builder
	log := slog.New(slog.NewJSONHandler(&b, nil))
	log.Info("x", "mcp", MCPWebhook{URL: url, Token: token, Routing: routing}, "prepared", PreparedWebhook{URL: url, Routing: routing},
		"routing", routing, "request", Request{URL: url, Authentication: auth, Headers: routing.Headers}, "delivery", Delivery{URL: url},
		"auth", *auth, "pauth", auth, "pmcp", &MCPWebhook{URL: url, Token: token})
	for _, s := range []string{token, hdr, query, auth.Credentials} {
		require.NotContains(t, b.String(), s)
	}
}
