package receive

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/adcpkit/webhook/internal/canon"
	"github.com/adcpkit/webhook/internal/sfv"
)

// The verifier checklist beyond the published vectors. Each case builds
// a webhook signed with the conformance Ed25519 key (so that a rejection
// past step 10 is the rule under test, not a bad signature) and then
// breaks one rule.

const (
	checkURL   = "https://buyer.example.com/adcp/webhook/op_1"
	checkKeyID = "test-ed25519-webhook-2026"
	checkNow   = int64(1776520800)
)

// signedWebhook is what checkRequest signs; its zero value is replaced by
// a valid webhook.
type signedWebhook struct {
	body          string
	components    []string
	created       int64
	expires       int64
	nonce         string
	keyID         string
	extraParams   string   // appended to sig1's parameters, signed
	contentType   []string // lines; nil: application/json
	contentDigest []string // lines; nil: the body's sha-256
}

// checkKey is the conformance Ed25519 private key.
func checkKey(t testing.TB) ed25519.PrivateKey {
	var k struct {
		D string `json:"_private_d_for_test_only"`
	}
	require.NoError(t, json.Unmarshal(vectorKeys(t)[checkKeyID], &k))
	seed, err := base64.RawURLEncoding.DecodeString(k.D)
	require.NoError(t, err)
	return ed25519.NewKeyFromSeed(seed)
}

// checkRequest signs w as a seller would and returns its header and body.
func checkRequest(t testing.TB, w signedWebhook) (http.Header, []byte) {
	if w.body == "" {
		w.body = `{"idempotency_key":"whk_1","task_id":"t","status":"completed"}`
	}
	if w.components == nil {
		w.components = requiredComponents
	}
	if w.created == 0 {
		w.created, w.expires = checkNow, checkNow+300
	}
	if w.nonce == "" {
		w.nonce = "KXYnfEfJ0PBRZXQyVXfVQA"
	}
	if w.keyID == "" {
		w.keyID = checkKeyID
	}
	sum := sha256.Sum256([]byte(w.body))
	if w.contentType == nil {
		w.contentType = []string{"application/json"}
	}
	if w.contentDigest == nil {
		w.contentDigest = []string{"sha-256=:" + base64.StdEncoding.EncodeToString(sum[:]) + ":"}
	}
	h := http.Header{"Content-Type": w.contentType, "Content-Digest": w.contentDigest}
	quoted := make([]string, len(w.components))
	for i, c := range w.components {
		quoted[i] = strconv.Quote(c)
	}
	input := fmt.Sprintf(`(%s);created=%d;expires=%d;nonce=%q;keyid=%q;alg="ed25519";tag=%q%s`,
		strings.Join(quoted, " "), w.created, w.expires, w.nonce, w.keyID, SignatureTag, w.extraParams)
	ms, err := sfv.ParseDictionary("sig1=" + input)
	require.NoError(t, err)
	var base strings.Builder
	for _, c := range w.components {
		var v string
		switch c {
		case "@method":
			v = http.MethodPost
		case "@target-uri":
			v = checkURL
		case "@authority":
			v = "buyer.example.com"
		default:
			v = strings.Join(h.Values(c), ", ")
		}
		fmt.Fprintf(&base, "%q: %s\n", c, v)
	}
	base.WriteString(`"@signature-params": ` + sfv.Serialize(ms[0].Items, ms[0].Params))
	sig := ed25519.Sign(checkKey(t), []byte(base.String()))
	h.Set("Signature-Input", "sig1="+input)
	h.Set("Signature", "sig1=:"+base64.RawURLEncoding.EncodeToString(sig)+":")
	return h, []byte(w.body)
}

// checkVerifier verifies against the conformance key at checkNow.
func checkVerifier(t testing.TB) *Verifier {
	keys, err := ParseJWKS([]byte(`{"keys":[` + string(vectorKeys(t)[checkKeyID]) + `]}`))
	require.NoError(t, err)
	v, err := NewVerifier(VerifierConfig{Keys: keys, Now: func() time.Time { return time.Unix(checkNow, 0) }})
	require.NoError(t, err)
	return v
}

func TestVerifierChecklist(t *testing.T) {
	t.Parallel()
	valid, body := checkRequest(t, signedWebhook{})
	_, err := checkVerifier(t).Verify(context.Background(), http.MethodPost, checkURL, valid, body)
	require.NoError(t, err, "the unbroken webhook verifies")

	with := func(name, value string) http.Header {
		h := valid.Clone()
		h.Set(name, value)
		return h
	}
	added := func(name, value string) http.Header {
		h := valid.Clone()
		h.Add(name, value)
		return h
	}
	sigInput, signature := valid.Get("Signature-Input"), valid.Get("Signature")
	sigBytes := strings.TrimSuffix(strings.TrimPrefix(signature, "sig1=:"), ":")
	raw, err := base64.RawURLEncoding.DecodeString(sigBytes)
	require.NoError(t, err)
	signed := func(w signedWebhook) http.Header { h, _ := checkRequest(t, w); return h }
	dupHeader, dupBody := checkRequest(t, signedWebhook{body: `{"status":"completed","status":"failed"}`})
	notJSONHeader, notJSON := checkRequest(t, signedWebhook{body: `{"status":`})

	for name, c := range map[string]struct {
		header http.Header
		body   string // default: the valid body
		code   string
	}{
		// Step 1: one sig1 in each header, bounded, in the profile's encoding.
		"two sig1 in Signature-Input":        {with("Signature-Input", sigInput+", "+sigInput), "", CodeHeaderMalformed},
		"two sig1 in Signature":              {with("Signature", signature+", "+signature), "", CodeHeaderMalformed},
		"sig1 on two Signature-Input lines":  {added("Signature-Input", sigInput), "", CodeHeaderMalformed},
		"sig1 on two Signature lines":        {added("Signature", signature), "", CodeHeaderMalformed},
		"padded standard base64 signature":   {with("Signature", "sig1=:"+base64.StdEncoding.EncodeToString(raw)+":"), "", CodeHeaderMalformed},
		"padded base64url signature":         {with("Signature", "sig1=:"+base64.URLEncoding.EncodeToString(raw)+":"), "", CodeHeaderMalformed},
		"Signature-Input over the size cap":  {with("Signature-Input", sigInput+", x=(\""+strings.Repeat("a", MaxSignatureHeaderBytes)+"\")"), "", CodeHeaderMalformed},
		"Signature-Input of too many labels": {with("Signature-Input", sigInput+strings.Repeat(`, x=()`, sfv.MaxMembers)), "", CodeHeaderMalformed},
		"other labels are ignored":           {with("Signature-Input", `relay=("@method");created=1, `+sigInput+`, z=()`), "", ""},
		// Step 2: parameters once each, strings quoted, nonce of the profile.
		"two tags":                {signed(signedWebhook{extraParams: `;tag="adcp/webhook-signing/v1"`}), "", CodeHeaderMalformed},
		"two nonces":              {signed(signedWebhook{extraParams: `;nonce="KXYnfEfJ0PBRZXQyVXfVQB"`}), "", CodeHeaderMalformed},
		"keyid as a token":        {with("Signature-Input", strings.Replace(sigInput, `keyid="`+checkKeyID+`"`, "keyid="+checkKeyID, 1)), "", CodeParamsIncomplete},
		"alg as a token":          {with("Signature-Input", strings.Replace(sigInput, `alg="ed25519"`, "alg=ed25519", 1)), "", CodeParamsIncomplete},
		"padded nonce":            {signed(signedWebhook{nonce: "KXYnfEfJ0PBRZXQyVXfVQA=="}), "", CodeHeaderMalformed},
		"standard-alphabet nonce": {signed(signedWebhook{nonce: "KXYnfEfJ0PBRZXQyVXf+QA"}), "", CodeHeaderMalformed},
		"15-byte nonce":           {signed(signedWebhook{nonce: base64.RawURLEncoding.EncodeToString(make([]byte, 15))}), "", CodeHeaderMalformed},
		// Step 5: the window, with the spec's 60 s allowance either side.
		"created 60 s ahead": {signed(signedWebhook{created: checkNow + 60, expires: checkNow + 300}), "", ""},
		"created 61 s ahead": {signed(signedWebhook{created: checkNow + 61, expires: checkNow + 300}), "", CodeWindowInvalid},
		"expired 60 s ago":   {signed(signedWebhook{created: checkNow - 300, expires: checkNow - 60}), "", ""},
		"expired 61 s ago":   {signed(signedWebhook{created: checkNow - 300, expires: checkNow - 61}), "", CodeWindowInvalid},
		"component twice":    {signed(signedWebhook{components: append([]string{"@method"}, requiredComponents...)}), "", CodeHeaderMalformed},
		// Steps 10 and 11: covered fields have one value, the digest one member.
		"two Content-Type lines":     {signed(signedWebhook{contentType: []string{"application/json", "text/plain"}}), "", CodeHeaderMalformed},
		"two Content-Digest lines":   {signed(signedWebhook{contentDigest: []string{valid.Get("Content-Digest"), valid.Get("Content-Digest")}}), "", CodeHeaderMalformed},
		"two Content-Digest members": {signed(signedWebhook{contentDigest: []string{valid.Get("Content-Digest") + ", sha-512=:AAAA:"}}), "", CodeDigestMismatch},
		"sha-256 twice":              {signed(signedWebhook{contentDigest: []string{valid.Get("Content-Digest") + ", " + valid.Get("Content-Digest")}}), "", CodeDigestMismatch},
		// Step 14: the body, once everything else holds.
		"duplicate keys": {dupHeader, string(dupBody), CodeBodyMalformed},
		"not JSON":       {notJSONHeader, string(notJSON), CodeBodyMalformed},
		// Mode: legacy HMAC headers where RFC 9421 is expected.
		"legacy HMAC headers": {http.Header{"Content-Type": {"application/json"}, "X-Adcp-Timestamp": {"1776520800"},
			"X-Adcp-Signature": {"sha256=00"}}, "", CodeModeMismatch},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := body
			if c.body != "" {
				b = []byte(c.body)
			}
			_, err := checkVerifier(t).Verify(context.Background(), http.MethodPost, checkURL, c.header, b)
			if c.code == "" {
				require.NoError(t, err)
				return
			}
			var ve *VerifyError
			require.ErrorAs(t, err, &ve)
			require.Equal(t, c.code, ve.Code, ve.Reason)
		})
	}
}

// BenchmarkVerifyHostileHeader is the most expensive request an
// unauthenticated sender can make the verifier parse, beside an honest one
// (whose signature fails, after the same work): Signature-Input and
// Signature at the size cap, every member at the member, item and
// parameter limits, and a sig1 that passes every check before the
// signature. A header over the cap costs less (it is measured, not
// parsed): see the 1 MiB case.
func BenchmarkVerifyHostileHeader(b *testing.B) {
	valid, body := checkRequest(b, signedWebhook{})
	member := func(i int) string {
		var m strings.Builder
		fmt.Fprintf(&m, "m%d=(", i)
		for j := range sfv.MaxItems {
			if j > 0 {
				m.WriteByte(' ')
			}
			m.WriteString(`"\\x"`)
		}
		m.WriteByte(')')
		for j := range sfv.MaxParams {
			fmt.Fprintf(&m, ";p%d=1", j)
		}
		return m.String()
	}
	fill := func(first string) string {
		s := first
		for i := 1; i < sfv.MaxMembers; i++ {
			if next := s + ", " + member(i); len(next) <= MaxSignatureHeaderBytes {
				s = next
			}
		}
		for len(s) < MaxSignatureHeaderBytes-3 {
			s += " "
		}
		return s
	}
	hostile := valid.Clone()
	hostile.Set("Signature-Input", fill(valid.Get("Signature-Input")))
	hostile.Set("Signature", fill(valid.Get("Signature")))
	huge := valid.Clone()
	var distinct strings.Builder // distinct names: each one new to a parser that looks for duplicates
	for i := 0; distinct.Len() < 1<<20; i++ {
		fmt.Fprintf(&distinct, "a%d=(), ", i)
	}
	huge.Set("Signature-Input", distinct.String())
	v := checkVerifier(b)
	// The hostile header is read to the end: it verifies once (then its
	// nonce is a replay, found after every other check).
	if _, err := v.Verify(context.Background(), http.MethodPost, checkURL, hostile, body); err != nil {
		b.Fatal(err)
	}
	honest := valid.Clone()
	honest.Set("Signature-Input", strings.Replace(valid.Get("Signature-Input"), "KXYnfEfJ0PBRZXQyVXfVQA", "LXYnfEfJ0PBRZXQyVXfVQA", 1))
	for name, h := range map[string]http.Header{"honest": honest, "at the caps": hostile, "1 MiB": huge} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := v.Verify(context.Background(), http.MethodPost, checkURL, h, body); err == nil {
					b.Fatal("verified twice")
				}
			}
		})
	}
	// An HTTP/2 :authority may carry any UTF-8: the longest host that
	// could be a domain name is converted, longer ones refused unread.
	for name, n := range map[string]int{"IDN host, longest label": 4 * 63, "IDN host, 48 KB": 48000} {
		var label strings.Builder
		for r := rune(0x4e00); label.Len() < n-3; r++ {
			label.WriteRune(r)
		}
		r := &http.Request{Method: "POST", Host: label.String() + ".example", RequestURI: "/adcp/webhook/op_1", Header: valid}
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				if _, err := v.VerifyRequest(r, body); err == nil {
					b.Fatal("verified")
				}
			}
		})
	}
}

// alwaysFresh is a NonceStore that never sees a replay, so that the one
// legitimate request of FuzzVerifyRequest verifies every time.
type alwaysFresh struct{}

func (alwaysFresh) Use(context.Context, string, string, time.Time, time.Time) (NonceVerdict, error) {
	return NonceFresh, nil
}

// FuzzVerifyRequest runs the verifier end to end on arbitrary requests to
// a fixed key: it must never panic, and it may accept only the one request
// the key signed (its method, canonical target and body), however the
// headers around that signature are rearranged.
func FuzzVerifyRequest(f *testing.F) {
	const host = "buyer.example.com"
	signedURL := "http://" + host + "/adcp/webhook/op_1?b=2&a=1"
	h, body := signFor(f, signedURL, signedWebhook{})
	f.Add("POST", "/adcp/webhook/op_1?b=2&a=1", h.Get("Signature-Input"), h.Get("Signature"), h.Get("Content-Digest"), h.Get("Content-Type"), body)
	f.Add("POST", "/adcp/webhook/op_1?a=1&b=2", h.Get("Signature-Input"), h.Get("Signature"), h.Get("Content-Digest"), "text/plain", body)
	f.Add("POST", "/x", `sig1=("@method");created=1;expires=2;nonce="AAAAAAAAAAAAAAAAAAAAAA";keyid="k";alg="ed25519";tag="t"`, "sig1=:AAAA:", "sha-256=:AAAA:", "application/json", []byte(`{"a":1,"a":2}`))
	keys, err := ParseJWKS([]byte(`{"keys":[` + string(vectorKeys(f)[checkKeyID]) + `]}`))
	require.NoError(f, err)
	v, err := NewVerifier(VerifierConfig{Keys: keys, Nonces: alwaysFresh{}, Now: func() time.Time { return time.Unix(checkNow, 0) }})
	require.NoError(f, err)
	wantTarget, _, err := canon.Target(signedURL)
	require.NoError(f, err)
	_, err = v.VerifyRequest(&http.Request{Method: "POST", Host: host, RequestURI: "/adcp/webhook/op_1?b=2&a=1", Header: h}, body)
	require.NoError(f, err, "the seed verifies: acceptance is reachable")
	f.Fuzz(func(t *testing.T, method, target, sigInput, sig, digest, ctype string, body2 []byte) {
		r := &http.Request{Method: method, Host: host, RequestURI: target, Header: http.Header{}}
		for name, val := range map[string]string{"Signature-Input": sigInput, "Signature": sig, "Content-Digest": digest, "Content-Type": ctype} {
			if val != "" {
				r.Header.Set(name, val)
			}
		}
		_, err := v.VerifyRequest(r, body2)
		if err != nil {
			var ve *VerifyError
			if !errors.As(err, &ve) || ve.Code == "" {
				t.Fatalf("an error that is not a *VerifyError with a code: %v", err)
			}
			return
		}
		gotTarget, _, terr := canon.Target("http://" + host + target)
		if method != "POST" || terr != nil || gotTarget != wantTarget || string(body2) != string(body) {
			t.Fatalf("accepted a request the key never signed: %s %q body %q", method, target, body2)
		}
	})
}

// signFor signs w for rawURL (an http URL on port 80).
func signFor(t testing.TB, rawURL string, w signedWebhook) (http.Header, []byte) {
	h, body := checkRequest(t, w)
	// Re-sign: checkRequest's base names checkURL; replace its target.
	target, authority, err := canon.Target(rawURL)
	require.NoError(t, err)
	ms, err := sfv.ParseDictionary(h.Get("Signature-Input"))
	require.NoError(t, err)
	base := fmt.Sprintf("%q: %s\n%q: %s\n%q: %s\n%q: %s\n%q: %s\n\"@signature-params\": %s",
		"@method", http.MethodPost, "@target-uri", target, "@authority", authority,
		"content-type", h.Get("Content-Type"), "content-digest", h.Get("Content-Digest"), sfv.Serialize(ms[0].Items, ms[0].Params))
	h.Set("Signature", "sig1=:"+base64.RawURLEncoding.EncodeToString(ed25519.Sign(checkKey(t), []byte(base)))+":")
	return h, body
}

// TestVerifierReviewFindings: what an adversarial review of the verifier
// found, each a case that failed before its fix.
func TestVerifierReviewFindings(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	code := func(err error) string {
		var ve *VerifyError
		if errors.As(err, &ve) {
			return ve.Code
		}
		return fmt.Sprint(err)
	}

	t.Run("a nonce is kept while its signature is accepted", func(t *testing.T) {
		h, body := checkRequest(t, signedWebhook{created: checkNow - 300, expires: checkNow - 30}) // in the 60 s grace
		v := checkVerifier(t)
		_, err := v.Verify(ctx, "POST", checkURL, h, body)
		require.NoError(t, err)
		_, err = v.Verify(ctx, "POST", checkURL, h, body)
		require.Equal(t, CodeReplayed, code(err))
		now := checkNow
		v.now = func() time.Time { return time.Unix(now, 0) }
		for _, at := range []int64{checkNow + 20, checkNow + 29} { // expires + 50, + 59: still accepted, so still a replay
			now = at
			_, err = v.Verify(ctx, "POST", checkURL, h, body)
			require.Equal(t, CodeReplayed, code(err), "at expires%+d", at-(checkNow-30))
		}
	})

	t.Run("the per-key cap is checked before cryptography", func(t *testing.T) {
		keys, err := ParseJWKS([]byte(`{"keys":[` + string(vectorKeys(t)[checkKeyID]) + `]}`))
		require.NoError(t, err)
		store := &MemoryNonceStore{PerKeyCap: 1}
		_, err = store.Use(ctx, checkKeyID, "someone-else", time.Unix(checkNow+300, 0), time.Unix(checkNow, 0))
		require.NoError(t, err)
		v, err := NewVerifier(VerifierConfig{Keys: keys, Nonces: store, Now: func() time.Time { return time.Unix(checkNow, 0) }})
		require.NoError(t, err)
		h, body := checkRequest(t, signedWebhook{})
		h.Set("Signature", "sig1=:"+base64.RawURLEncoding.EncodeToString(make([]byte, 64))+":") // forged
		_, err = v.Verify(ctx, "POST", checkURL, h, body)
		require.Equal(t, CodeRateAbuse, code(err), "refused without verifying the forged signature")
	})

	t.Run("Host must match :authority", func(t *testing.T) {
		h, body := checkRequest(t, signedWebhook{})
		for host, want := range map[string]string{"buyer.example.com": "", "BUYER.example.com.": "", "other-vhost.example": CodeTargetURIMalformed} {
			r := &http.Request{Method: "POST", Host: "buyer.example.com", RequestURI: "/adcp/webhook/op_1", TLS: &tls.ConnectionState{}, Header: h.Clone()}
			r.Header.Set("Host", host) // as Go's HTTP/2 server leaves it
			_, err := checkVerifier(t).VerifyRequest(r, body)
			if want == "" {
				require.NoError(t, err, host)
			} else {
				require.Equal(t, want, code(err), host)
			}
		}
	})

	t.Run("checks run in the checklist's order", func(t *testing.T) {
		valid, body := checkRequest(t, signedWebhook{})
		input := valid.Get("Signature-Input")
		for name, c := range map[string]struct {
			input string
			want  string
		}{
			"item parameters before a bad tag": {strings.Replace(strings.Replace(input, `"@method"`, `"@method";req`, 1), SignatureTag, "other/v1", 1), CodeHeaderMalformed},
			"@query before an unknown key":     {strings.Replace(strings.Replace(input, `"@method"`, `"@method" "@query"`, 1), checkKeyID, "nobody", 1), CodeHeaderMalformed},
			"absent header before an unknown key": {strings.Replace(strings.Replace(input, `"@method"`, `"@method" "x-absent"`, 1), checkKeyID, "nobody", 1),
				CodeComponentsIncomplete},
		} {
			h := valid.Clone()
			h.Set("Signature-Input", c.input)
			_, err := checkVerifier(t).Verify(ctx, "POST", checkURL, h, body)
			require.Equal(t, c.want, code(err), name)
		}
	})

	t.Run("JWK use, key_ops and alg", func(t *testing.T) {
		var k map[string]any
		require.NoError(t, json.Unmarshal(vectorKeys(t)[checkKeyID], &k))
		with := func(edit func(map[string]any)) []byte {
			c := maps.Clone(k)
			edit(c)
			b, err := json.Marshal(map[string]any{"keys": []any{c}})
			require.NoError(t, err)
			return b
		}
		_, err := ParseJWKS(with(func(c map[string]any) { c["use"] = "enc" }))
		require.Error(t, err, "an encryption key is skipped: no usable key")
		_, err = ParseJWKS(with(func(c map[string]any) { c["alg"] = "ES256" }))
		require.ErrorContains(t, err, "does not match")
		keys, err := ParseJWKS(with(func(c map[string]any) { delete(c, "key_ops") }))
		require.NoError(t, err)
		v, err := NewVerifier(VerifierConfig{Keys: keys, Now: func() time.Time { return time.Unix(checkNow, 0) }})
		require.NoError(t, err)
		h, body := checkRequest(t, signedWebhook{})
		_, err = v.Verify(ctx, "POST", checkURL, h, body)
		require.Equal(t, CodeKeyPurposeInvalid, code(err), "a key without key_ops")
	})

	t.Run("an overlong internationalised host costs little", func(t *testing.T) {
		var label strings.Builder
		for r := rune(0x4e00); label.Len() < 48000; r++ {
			label.WriteRune(r)
		}
		h, body := checkRequest(t, signedWebhook{})
		r := &http.Request{Method: "POST", Host: label.String() + ".example", RequestURI: "/x", Header: h}
		_, err := checkVerifier(t).VerifyRequest(r, body)
		require.Equal(t, CodeTargetURIMalformed, code(err))
	})
}
