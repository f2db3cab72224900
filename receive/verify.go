package receive

import (
	"context"
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/adcpkit/webhook/internal/canon"
	"github.com/adcpkit/webhook/internal/jwk"
	"github.com/adcpkit/webhook/internal/sfv"
	"github.com/adcpkit/webhook/internal/strictjson"
)

// VerifyingKey is a seller's public key, with the metadata the verifier
// checklist inspects. Build it with [ParseJWKS] or [NewVerifyingKey] (or,
// for a seller's own key, webhook.SigningKey.VerifyingKey): its key
// material is unexported, so a VerifyingKey written as a literal holds none
// and [NewVerifier] refuses it.
type VerifyingKey struct {
	// KeyID is the key's kid.
	KeyID string
	// AdcpUse must be "request-signing" or the deprecated
	// "webhook-signing" for a webhook signature to verify.
	AdcpUse string
	// KeyOps must contain "verify" (the checklist's step 8 rejects a key
	// without key_ops). NewVerifyingKey sets it to ["verify"].
	KeyOps []string
	// Alg is the key's signature algorithm ([AlgEd25519] or
	// [AlgECDSAP256]), derived from its curve.
	Alg string
	key any // ed25519.PublicKey or *ecdsa.PublicKey
}

// NewVerifyingKey wraps an ed25519.PublicKey or a P-256 *ecdsa.PublicKey
// with its kid and adcp_use, for a [Verifier]. KeyOps is ["verify"]. A key of another type or curve, or an empty kid, is an error
// wrapping [ErrInvalidKey].
func NewVerifyingKey(keyID, adcpUse string, pub crypto.PublicKey) (VerifyingKey, error) {
	k := VerifyingKey{KeyID: keyID, AdcpUse: adcpUse, KeyOps: []string{"verify"}, key: pub}
	switch p := pub.(type) {
	case ed25519.PublicKey:
		if len(p) != ed25519.PublicKeySize {
			return VerifyingKey{}, badKey("Ed25519 public key has %d bytes, want %d", len(p), ed25519.PublicKeySize)
		}
		k.Alg = AlgEd25519
	case *ecdsa.PublicKey:
		if p == nil || p.Curve != elliptic.P256() {
			return VerifyingKey{}, badKey("ECDSA keys must be on P-256")
		}
		k.Alg = AlgECDSAP256
	default:
		return VerifyingKey{}, badKey("%T is not supported; use an ed25519.PublicKey or a P-256 *ecdsa.PublicKey", pub)
	}
	if keyID == "" {
		return VerifyingKey{}, badKey("key ID is empty")
	}
	return k, nil
}

// ParseJWKS reads a JWK Set ({"keys": [...]}) of Ed25519 (OKP) and P-256
// (EC) public keys. Keys of other types, and keys whose "use" is not
// "sig" (encryption keys), are skipped; a malformed key of a supported
// type, or one whose "alg" contradicts its curve (Ed25519 is EdDSA, P-256
// is ES256), or a set with no usable key, is an error. Purpose and key_ops
// are checked at verification, per signature.
func ParseJWKS(data []byte) ([]VerifyingKey, error) {
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(data, &set); err != nil {
		return nil, fmt.Errorf("receive: JWKS is not a JSON object with keys: %w", err)
	}
	var out []VerifyingKey
	for i, raw := range set.Keys {
		var j jwk.Key
		if err := json.Unmarshal(raw, &j); err != nil {
			return nil, fmt.Errorf("receive: JWKS key %d: %w", i, err)
		}
		if j.Use != "" && j.Use != "sig" {
			continue
		}
		k := VerifyingKey{KeyID: j.Kid, AdcpUse: j.AdcpUse, KeyOps: j.KeyOps}
		if want := map[string]string{"OKP": "EdDSA", "EC": "ES256"}[j.Kty]; j.Alg != "" && want != "" && j.Alg != want {
			return nil, fmt.Errorf("receive: JWKS key %q: alg %q does not match its %s key (%s)", j.Kid, j.Alg, j.Kty, want)
		}
		switch {
		case j.Kty == "OKP" && j.Crv == "Ed25519":
			x, err := base64.RawURLEncoding.DecodeString(j.X)
			if err != nil || len(x) != ed25519.PublicKeySize {
				return nil, fmt.Errorf("receive: JWKS key %q: bad Ed25519 x", j.Kid)
			}
			k.Alg, k.key = AlgEd25519, ed25519.PublicKey(x)
		case j.Kty == "EC" && j.Crv == "P-256":
			x, errX := base64.RawURLEncoding.DecodeString(j.X)
			y, errY := base64.RawURLEncoding.DecodeString(j.Y)
			if errX != nil || errY != nil || len(x) != 32 || len(y) != 32 {
				return nil, fmt.Errorf("receive: JWKS key %q: bad P-256 x or y", j.Kid)
			}
			if _, err := ecdh.P256().NewPublicKey(append(append([]byte{4}, x...), y...)); err != nil {
				return nil, fmt.Errorf("receive: JWKS key %q: point not on P-256", j.Kid)
			}
			pub := &ecdsa.PublicKey{Curve: elliptic.P256(), X: new(big.Int).SetBytes(x), Y: new(big.Int).SetBytes(y)}
			k.Alg, k.key = AlgECDSAP256, pub
		default:
			continue
		}
		if k.KeyID == "" {
			return nil, fmt.Errorf("receive: JWKS key %d has no kid", i)
		}
		out = append(out, k)
	}
	if len(out) == 0 {
		return nil, errors.New("receive: JWKS has no Ed25519 (OKP) or P-256 (EC) key")
	}
	return out, nil
}

// KeyRevocations tells the verifier which keys are revoked. CheckKey
// returns nil for a usable key, or a [*VerifyError] with CodeKeyRevoked or
// CodeRevocationStale (when the revocation list is too old to trust).
// Implementations must be safe for concurrent use.
type KeyRevocations interface {
	CheckKey(ctx context.Context, keyID string, now time.Time) error
}

// RevocationList is an in-memory [KeyRevocations]: a set of revoked key IDs
// and the time it was last refreshed from the seller's revocation feed.
type RevocationList struct {
	// MaxAge is how old the list may be before every verification fails
	// with CodeRevocationStale. Zero means never stale.
	MaxAge time.Duration

	mu        sync.Mutex
	revoked   map[string]bool
	refreshed time.Time
}

// Update replaces the revoked set and records when it was fetched.
func (l *RevocationList) Update(revoked []string, fetchedAt time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.revoked = make(map[string]bool, len(revoked))
	for _, k := range revoked {
		l.revoked[k] = true
	}
	l.refreshed = fetchedAt
}

// CheckKey implements [KeyRevocations].
func (l *RevocationList) CheckKey(_ context.Context, keyID string, now time.Time) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.MaxAge > 0 && now.Sub(l.refreshed) > l.MaxAge {
		return reject(CodeRevocationStale, 9, "the revocation list was last refreshed %v ago (limit %v)", now.Sub(l.refreshed).Round(time.Second), l.MaxAge)
	}
	if l.revoked[keyID] {
		return reject(CodeKeyRevoked, 9, "key %q is revoked", keyID)
	}
	return nil
}

// NonceVerdict is what a [NonceStore] says about a nonce.
type NonceVerdict int

const (
	// NonceFresh: the nonce was new and is now recorded.
	NonceFresh NonceVerdict = iota
	// NonceReplayed: the nonce was already recorded for the key.
	NonceReplayed
	// NonceOverCap: the key already has as many live nonces as the store
	// allows (the per-key rate cap); nothing was recorded.
	NonceOverCap
)

// NonceCapChecker is implemented by a [NonceStore] that can say, without
// recording anything, whether a key is at its cap. The verifier then
// refuses such a key's signatures with CodeRateAbuse before any
// cryptographic work (checklist step 9a), as the spec asks; Use still
// decides the cap atomically. [MemoryNonceStore] implements it.
type NonceCapChecker interface {
	OverCap(ctx context.Context, keyID string, now time.Time) (bool, error)
}

// NonceStore remembers the (key ID, nonce) pairs of accepted signatures
// until they expire. Implementations must be safe for concurrent use, and
// Use must decide and record atomically.
type NonceStore interface {
	// Use records nonce for keyID until expires, unless it is a replay or
	// the key is over its cap.
	Use(ctx context.Context, keyID, nonce string, expires, now time.Time) (NonceVerdict, error)
}

// MemoryNonceStoreCapDefault is MemoryNonceStore's default per-key cap.
const MemoryNonceStoreCapDefault = 100_000

// MemoryNonceStore is an in-memory [NonceStore]. Each key's nonces are
// forgotten, oldest first, once they expire, at O(1) amortised cost per
// call. The zero value is ready to use.
type MemoryNonceStore struct {
	// PerKeyCap bounds the live nonces per key. Defaults to 100,000.
	PerKeyCap int

	mu   sync.Mutex
	keys map[string]*nonceSet
}

// nonceSet is one key's live nonces, with their expiry in recording order
// (nearly expiry order: every signature's window is at most 300 s).
type nonceSet struct {
	live  map[string]bool
	order []nonceEntry
}

type nonceEntry struct {
	nonce   string
	expires time.Time
}

// OverCap implements [NonceCapChecker].
func (s *MemoryNonceStore) OverCap(_ context.Context, keyID string, now time.Time) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	set := s.keys[keyID]
	if set == nil {
		return false, nil
	}
	set.expire(now)
	return len(set.live) >= s.limit(), nil
}

func (s *MemoryNonceStore) limit() int {
	if s.PerKeyCap <= 0 {
		return MemoryNonceStoreCapDefault
	}
	return s.PerKeyCap
}

// expire forgets the nonces that expired by now.
func (set *nonceSet) expire(now time.Time) {
	for len(set.order) > 0 && !now.Before(set.order[0].expires) {
		delete(set.live, set.order[0].nonce)
		set.order[0] = nonceEntry{}
		set.order = set.order[1:]
	}
}

// Use implements [NonceStore].
func (s *MemoryNonceStore) Use(_ context.Context, keyID, nonce string, expires, now time.Time) (NonceVerdict, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.keys == nil {
		s.keys = make(map[string]*nonceSet)
	}
	set := s.keys[keyID]
	if set == nil {
		set = &nonceSet{live: make(map[string]bool)}
		s.keys[keyID] = set
	}
	set.expire(now)
	if set.live[nonce] {
		return NonceReplayed, nil
	}
	if len(set.live) >= s.limit() {
		return NonceOverCap, nil
	}
	set.live[nonce] = true
	set.order = append(set.order, nonceEntry{nonce: nonce, expires: expires})
	return NonceFresh, nil
}

// VerifierConfig configures [NewVerifier].
type VerifierConfig struct {
	// Keys are the seller's public keys ([ParseJWKS]). Required unless
	// Discovery is set.
	Keys []VerifyingKey
	// Discovery, instead of Keys, fetches the seller's keys from its
	// brand.json or a pinned jwks_uri ([NewKeyDiscovery]). Agent defaults
	// to its agent, and Revocations to it when it has a revocation list.
	Discovery *KeyDiscovery
	// Agent is the seller agent's URL, as its brand.json agents[] entry
	// names it: the authenticated sender identity of every webhook these
	// keys verify, which scopes de-duplication ([Handler]) and the replay
	// cache (a kid is unique only within its seller's JWKS). A [Handler]
	// requires it.
	Agent string
	// Revocations, when set, is consulted for every key. Defaults to none.
	Revocations KeyRevocations
	// Nonces remembers nonces against replay. Defaults to a
	// MemoryNonceStore.
	Nonces NonceStore
	// Admissions, when set, watches for new-keyid admission pressure
	// across every Verifier that shares it ([NewAdmissionMonitor]).
	Admissions *AdmissionMonitor
	// Skew is the clock allowance: how far in the future created may be,
	// and how long after expires the signature is still accepted. Defaults
	// to, and may not exceed, MaxSkew (the spec's allowance).
	Skew time.Duration
	// ExternalURL returns the absolute URL the seller addressed a request
	// to, for VerifyRequest. Behind a proxy or load balancer that terminates
	// TLS or rewrites the host, set it (for example to prepend your public
	// origin to r.RequestURI). Defaults to "http" or "https" (from r.TLS),
	// r.Host and r.RequestURI.
	ExternalURL func(r *http.Request) string
	// Now is the clock. Defaults to time.Now.
	Now func() time.Time
}

// Verifier checks inbound AdCP webhooks for buyers against the RFC 9421
// webhook profile, following the spec's verifier checklist and failing with
// its error codes. (Webhooks registered with legacy HMAC-SHA256
// authentication are checked by [VerifyLegacyHMAC] instead.) It is safe for
// concurrent use.
type Verifier struct {
	agent       string
	keys        map[string]VerifyingKey
	discovery   *KeyDiscovery
	admissions  *AdmissionMonitor
	revocations KeyRevocations
	nonces      NonceStore
	skew        time.Duration
	externalURL func(*http.Request) string
	now         func() time.Time
}

// NewVerifier returns a Verifier for cfg.
func NewVerifier(cfg VerifierConfig) (*Verifier, error) {
	switch d := cfg.Discovery; {
	case d == nil && len(cfg.Keys) == 0:
		return nil, badConfig("VerifierConfig.Keys", "is empty; load the seller's JWKS with ParseJWKS, or set Discovery")
	case d != nil && len(cfg.Keys) > 0:
		return nil, badConfig("VerifierConfig.Keys", "are set with Discovery; use one or the other")
	case d != nil && cfg.Agent != "" && cfg.Agent != d.agent:
		return nil, badConfig("VerifierConfig.Agent", "differs from the Discovery's agent; leave it empty")
	case d != nil:
		cfg.Agent = d.agent
		if cfg.Revocations == nil && d.revURL != "" {
			cfg.Revocations = d
		}
	}
	if cfg.Skew < 0 || cfg.Skew > MaxSkew {
		return nil, badConfig("VerifierConfig.Skew", "is %v; use up to %v, or zero for %v", cfg.Skew, MaxSkew, MaxSkew)
	}
	v := &Verifier{
		agent:       cfg.Agent,
		keys:        make(map[string]VerifyingKey, len(cfg.Keys)),
		discovery:   cfg.Discovery,
		admissions:  cfg.Admissions,
		revocations: cfg.Revocations,
		nonces:      cfg.Nonces,
		skew:        cfg.Skew,
		externalURL: cfg.ExternalURL,
		now:         cfg.Now,
	}
	for i, k := range cfg.Keys {
		if k.key == nil || k.KeyID == "" {
			return nil, badConfig(fmt.Sprintf("VerifierConfig.Keys[%d]", i), "has no key material or kid; build keys with ParseJWKS or NewVerifyingKey")
		}
		if _, dup := v.keys[k.KeyID]; dup {
			return nil, badConfig(fmt.Sprintf("VerifierConfig.Keys[%d]", i), "repeats kid %q", k.KeyID)
		}
		v.keys[k.KeyID] = k
	}
	if v.nonces == nil {
		v.nonces = &MemoryNonceStore{}
	}
	if v.skew == 0 {
		v.skew = MaxSkew
	}
	if v.now == nil {
		v.now = time.Now
	}
	return v, nil
}

// VerifiedSignature describes a signature that verified.
type VerifiedSignature struct {
	// Agent is the seller agent the key belongs to
	// ([VerifierConfig.Agent]): the authenticated sender identity.
	Agent string
	// KeyID is the kid of the key that verified it.
	KeyID string
	// Alg is its algorithm.
	Alg string
	// Created and Expires bound its validity.
	Created, Expires time.Time
	// Nonce is its nonce.
	Nonce string
}

// VerifyRequest verifies r, whose body the caller has read into body. The
// target URI comes from [VerifierConfig.ExternalURL]; by default it is
// rebuilt from r.Host and r.RequestURI, with https only when r.TLS is set,
// which is wrong behind a TLS-terminating proxy. A request target that is not an
// origin-form path (or that carries a "#", which the handler would see but
// the signature would not cover) is rejected.
func (v *Verifier) VerifyRequest(r *http.Request, body []byte) (VerifiedSignature, error) {
	if !strings.HasPrefix(r.RequestURI, "/") || strings.Contains(r.RequestURI, "#") {
		return VerifiedSignature{}, reject(CodeTargetURIMalformed, 10, "the request target is not an origin-form path")
	}
	scheme, defaultPort := "http", "80"
	if r.TLS != nil {
		scheme, defaultPort = "https", "443"
	}
	// Over HTTP/2, r.Host is :authority and a Host field, if sent, stays in
	// the header: the two must name one authority (a request signed for one
	// virtual host must not be routed to another).
	if hosts := r.Header.Values("Host"); len(hosts) > 0 {
		want, err := canon.Authority(r.Host, defaultPort)
		got, err2 := canon.Authority(hosts[0], defaultPort)
		if len(hosts) > 1 || err != nil || err2 != nil || got != want {
			return VerifiedSignature{}, reject(CodeTargetURIMalformed, 10, "the Host field does not match the request's authority")
		}
	}
	if v.externalURL != nil {
		return v.Verify(r.Context(), r.Method, v.externalURL(r), r.Header, body)
	}
	return v.Verify(r.Context(), r.Method, scheme+"://"+r.Host+r.RequestURI, r.Header, body)
}

var requiredComponents = []string{"@method", "@target-uri", "@authority", "content-type", "content-digest"}

// Verify verifies a webhook given its method, the absolute URL it was sent
// to, its headers and its body. It returns the verified signature; a
// [*VerifyError] when the webhook fails a check; or, wrapped, an error from
// the [NonceStore].
func (v *Verifier) Verify(ctx context.Context, method, rawURL string, header http.Header, body []byte) (VerifiedSignature, error) {
	now := v.now()
	// Step 1: both headers, bounded, parseable, with one sig1 member each.
	inputHeader, err := oneField(header, "Signature-Input")
	if err != nil {
		return VerifiedSignature{}, err
	}
	sigHeader, err := oneField(header, "Signature")
	if err != nil {
		return VerifiedSignature{}, err
	}
	if inputHeader == "" && sigHeader == "" && (header.Get("X-ADCP-Signature") != "" || header.Get("X-ADCP-Timestamp") != "") {
		return VerifiedSignature{}, reject(CodeModeMismatch, 1, "the webhook carries a legacy HMAC signature, not the RFC 9421 signature this route expects")
	}
	if inputHeader == "" && sigHeader == "" && strings.HasPrefix(header.Get("Authorization"), "Bearer ") {
		return VerifiedSignature{}, reject(CodeModeMismatch, 1, "the webhook carries a legacy Bearer token, not the RFC 9421 signature this route expects")
	}
	if inputHeader == "" || sigHeader == "" {
		return VerifiedSignature{}, reject(CodeHeaderMalformed, 1, "Signature-Input and Signature must both be present")
	}
	inputs, err := sfv.ParseDictionary(inputHeader)
	if err != nil {
		return VerifiedSignature{}, reject(CodeHeaderMalformed, 1, "Signature-Input is not a structured field dictionary of at most %d members: %v", sfv.MaxMembers, err)
	}
	sigs, err := sfv.ParseDictionary(sigHeader)
	if err != nil {
		return VerifiedSignature{}, reject(CodeHeaderMalformed, 1, "Signature is not a structured field dictionary of at most %d members: %v", sfv.MaxMembers, err)
	}
	input, n := sfv.Find(inputs, SignatureLabel)
	if n != 1 || !input.IsList {
		return VerifiedSignature{}, reject(CodeHeaderMalformed, 1, "Signature-Input has %d %s members; exactly one inner list is allowed", n, SignatureLabel)
	}
	sigMember, n := sfv.Find(sigs, SignatureLabel)
	if n != 1 || sigMember.IsList {
		return VerifiedSignature{}, reject(CodeHeaderMalformed, 1, "Signature has %d %s members; exactly one byte sequence is allowed", n, SignatureLabel)
	}
	// The webhook profile encodes the signature in unpadded base64url.
	sig, err := base64.RawURLEncoding.Strict().DecodeString(sigMember.Bytes)
	if err != nil {
		return VerifiedSignature{}, reject(CodeHeaderMalformed, 1, "the Signature value is not unpadded base64url, as the webhook profile requires")
	}
	if input.ItemParams {
		return VerifiedSignature{}, reject(CodeHeaderMalformed, 1, "covered components carry parameters, which the webhook profile does not use")
	}
	for _, c := range input.Items {
		if strings.HasPrefix(c, "@") && c != "@method" && c != "@target-uri" && c != "@authority" {
			return VerifiedSignature{}, reject(CodeHeaderMalformed, 1, "component %q is not supported", c)
		}
	}

	// Step 2: parameters, each once, of the right type.
	params := make(map[string]sfv.Param, len(input.Params))
	for _, p := range input.Params {
		if _, dup := params[p.Name]; dup {
			return VerifiedSignature{}, reject(CodeHeaderMalformed, 2, "parameter %q appears more than once", p.Name)
		}
		params[p.Name] = p
	}
	for _, name := range []string{"created", "expires", "nonce", "keyid", "alg", "tag"} {
		if _, ok := params[name]; !ok {
			return VerifiedSignature{}, reject(CodeParamsIncomplete, 2, "parameter %q is missing", name)
		}
	}
	created, expires := params["created"], params["expires"]
	if !created.IsInt || !expires.IsInt {
		return VerifiedSignature{}, reject(CodeParamsIncomplete, 2, "created and expires must be integers")
	}
	for _, name := range []string{"nonce", "keyid", "alg", "tag"} {
		if p := params[name]; p.IsInt || p.IsToken {
			return VerifiedSignature{}, reject(CodeParamsIncomplete, 2, "parameter %q must be a quoted string", name)
		}
	}
	keyID, alg, nonce := params["keyid"].Str, params["alg"].Str, params["nonce"].Str
	if raw, err := base64.RawURLEncoding.Strict().DecodeString(nonce); err != nil || len(raw) < MinNonceBytes {
		return VerifiedSignature{}, reject(CodeHeaderMalformed, 2, "the nonce must be unpadded base64url of at least %d bytes", MinNonceBytes)
	}

	// Steps 3 to 5: tag, algorithm, window.
	if tag := params["tag"].Str; tag != SignatureTag {
		return VerifiedSignature{}, reject(CodeTagInvalid, 3, "tag is %q, want %q", tag, SignatureTag)
	}
	if alg != AlgEd25519 && alg != AlgECDSAP256 {
		return VerifiedSignature{}, reject(CodeAlgNotAllowed, 4, "alg %q is not allowed", alg)
	}
	switch c, e, n := created.Int, expires.Int, now.Unix(); {
	case e <= c:
		return VerifiedSignature{}, reject(CodeWindowInvalid, 5, "expires (%d) is not after created (%d)", e, c)
	case e-c > int64(SignatureWindow/time.Second):
		return VerifiedSignature{}, reject(CodeWindowInvalid, 5, "the window is %ds; at most %ds is allowed", e-c, int64(SignatureWindow/time.Second))
	case c > n+int64(v.skew/time.Second):
		return VerifiedSignature{}, reject(CodeWindowInvalid, 5, "created (%d) is in the future", c)
	case e < n-int64(v.skew/time.Second):
		return VerifiedSignature{}, reject(CodeWindowInvalid, 5, "the signature expired at %d", e)
	}

	// Step 6: covered components, each once, every covered header present
	// on one line of bounded size (Content-Type and Content-Digest have one
	// value; a field sent twice means two things to two readers).
	for i, c := range input.Items {
		if slices.Contains(input.Items[:i], c) {
			return VerifiedSignature{}, reject(CodeHeaderMalformed, 6, "component %q is covered twice", c)
		}
	}
	for _, c := range requiredComponents {
		if !slices.Contains(input.Items, c) {
			return VerifiedSignature{}, reject(CodeComponentsIncomplete, 6, "component %q is not covered", c)
		}
	}
	for _, c := range input.Items {
		if strings.HasPrefix(c, "@") {
			continue
		}
		switch vals := header.Values(c); {
		case len(vals) == 0:
			return VerifiedSignature{}, reject(CodeComponentsIncomplete, 6, "covered header %q is absent", c)
		case len(vals) > 1:
			return VerifiedSignature{}, reject(CodeHeaderMalformed, 6, "covered header %q appears %d times; once is allowed", c, len(vals))
		case len(vals[0]) > MaxSignatureHeaderBytes:
			return VerifiedSignature{}, reject(CodeHeaderMalformed, 6, "covered header %q is longer than %d bytes", c, MaxSignatureHeaderBytes)
		}
	}

	// Steps 7 to 9: the key.
	key, ok := v.keys[keyID]
	if v.discovery != nil {
		if key, err = v.discovery.lookup(ctx, keyID); err != nil {
			return VerifiedSignature{}, err
		}
	} else if !ok {
		return VerifiedSignature{}, reject(CodeKeyUnknown, 7, "no key with keyid %q", keyID)
	}
	if key.AdcpUse != "request-signing" && key.AdcpUse != "webhook-signing" {
		return VerifiedSignature{}, reject(CodeKeyPurposeInvalid, 8, "key %q has adcp_use %q", keyID, key.AdcpUse)
	}
	if !slices.Contains(key.KeyOps, "verify") {
		return VerifiedSignature{}, reject(CodeKeyPurposeInvalid, 8, "key %q has no \"verify\" in key_ops", keyID)
	}
	if key.Alg != alg {
		return VerifiedSignature{}, reject(CodeKeyPurposeInvalid, 8, "key %q is for %s, not %s", keyID, key.Alg, alg)
	}
	if v.revocations != nil {
		if err := v.revocations.CheckKey(ctx, keyID, now); err != nil {
			return VerifiedSignature{}, err
		}
	}
	// Step 9a, before any cryptography, when the store can tell: the
	// per-key cap. (Use decides it again, atomically, at step 12.)
	nonceKey := v.nonceKey(keyID)
	if capper, ok := v.nonces.(NonceCapChecker); ok {
		switch over, err := capper.OverCap(ctx, nonceKey, now); {
		case err != nil:
			return VerifiedSignature{}, fmt.Errorf("receive: nonce store: %w", err)
		case over:
			return VerifiedSignature{}, reject(CodeRateAbuse, 9, "key %q has too many live nonces", keyID)
		}
	}

	// Step 10: the signature.
	target, authority, err := canon.Target(rawURL)
	if err != nil {
		return VerifiedSignature{}, reject(CodeTargetURIMalformed, 10, "the request URL cannot be canonicalised: %v", err)
	}
	var b strings.Builder
	for _, c := range input.Items {
		var value string
		switch c {
		case "@method":
			value = method // case-sensitive, as RFC 9421 says
		case "@target-uri":
			value = target
		case "@authority":
			value = authority
		default: // checked at step 6: present, once
			value = strings.TrimSpace(header.Get(c))
		}
		b.WriteString(strconv.Quote(c))
		b.WriteString(": ")
		b.WriteString(value)
		b.WriteByte('\n')
	}
	b.WriteString(`"@signature-params": `)
	b.WriteString(sfv.Serialize(input.Items, input.Params))
	if !verifySignature(key, []byte(b.String()), sig) {
		return VerifiedSignature{}, reject(CodeSignatureInvalid, 10, "the signature does not verify with key %q", keyID)
	}

	// Step 11: the body.
	if err := checkContentDigest(header.Values("Content-Digest"), body); err != nil {
		return VerifiedSignature{}, err
	}

	// Steps 9a and 12, last so that only authenticated requests write to
	// the nonce store: the per-key cap, and replay. The nonce is kept as
	// long as the signature could still be accepted: until expires plus
	// the skew allowance (and a second, as now is read in whole seconds).
	switch verdict, err := v.nonces.Use(ctx, nonceKey, nonce, time.Unix(expires.Int, 0).Add(v.skew+time.Second), now); {
	case err != nil:
		return VerifiedSignature{}, fmt.Errorf("receive: nonce store: %w", err)
	case verdict == NonceReplayed:
		return VerifiedSignature{}, reject(CodeReplayed, 12, "nonce %q of key %q was already used", nonce, keyID)
	case verdict == NonceOverCap:
		return VerifiedSignature{}, reject(CodeRateAbuse, 9, "key %q has too many live nonces", keyID)
	}
	if v.admissions != nil {
		v.admissions.Observe(ctx, nonceKey, now)
	}

	// Step 14: one strict JSON value, so that every reader sees the body
	// the signature vouched for. The reason names duplicate keys only
	// sanitized, and holds no other byte of the body.
	if err := strictjson.Check(body); err != nil {
		return VerifiedSignature{}, reject(CodeBodyMalformed, 14, "the body (%d bytes, key %q, nonce %q) is %v", len(body), keyID, nonce, err)
	}
	return VerifiedSignature{Agent: v.agent, KeyID: keyID, Alg: alg, Created: time.Unix(created.Int, 0), Expires: time.Unix(expires.Int, 0), Nonce: nonce}, nil
}

// nonceKey is the key ID under which the nonce store keeps a key's nonces:
// the kid, prefixed by the seller agent when there is one, so that sellers
// whose kids collide sharing one store do not share a cap.
func (v *Verifier) nonceKey(keyID string) string {
	if v.agent == "" {
		return keyID
	}
	return v.agent + " " + keyID
}

// MaxSignatureHeaderBytes bounds each of the Signature-Input, Signature
// and Content-Digest fields (all its lines together) that the verifier
// reads. An AdCP webhook's are a few hundred bytes; a longer one is
// refused before it is parsed.
const MaxSignatureHeaderBytes = 4096

// MaxSkew is the most clock skew the AdCP verifier checklist allows
// either side of a signature's window.
const MaxSkew = 60 * time.Second

// MinNonceBytes is the shortest nonce, decoded, that the verifier accepts:
// the profile's 128 bits.
const MinNonceBytes = 16

// oneField returns the lines of a header field combined, as RFC 9110 joins
// them, once it has checked their size without building anything larger
// than MaxSignatureHeaderBytes.
func oneField(h http.Header, name string) (string, error) {
	vals := h.Values(name)
	size := 0
	for i, v := range vals {
		if size += len(v); i > 0 {
			size += 2
		}
		if size > MaxSignatureHeaderBytes {
			return "", reject(CodeHeaderMalformed, 1, "%s is longer than %d bytes", name, MaxSignatureHeaderBytes)
		}
	}
	return strings.Join(vals, ", "), nil
}

// decodeBase64Either decodes base64url or standard base64, padded or not,
// but not a mixture of the two alphabets.
func decodeBase64Either(s string) ([]byte, error) {
	url, std := strings.ContainsAny(s, "-_"), strings.ContainsAny(s, "+/")
	if url && std {
		return nil, errors.New("mixes the base64url and standard alphabets")
	}
	s = strings.TrimRight(s, "=")
	if std {
		return base64.RawStdEncoding.Strict().DecodeString(s)
	}
	return base64.RawURLEncoding.Strict().DecodeString(s)
}

func verifySignature(k VerifyingKey, base, sig []byte) bool {
	switch pub := k.key.(type) {
	case ed25519.PublicKey:
		return len(sig) == ed25519.SignatureSize && ed25519.Verify(pub, base, sig)
	case *ecdsa.PublicKey:
		if len(sig) != 64 {
			return false
		}
		h := sha256.Sum256(base)
		return ecdsa.Verify(pub, h[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:]))
	}
	return false
}

// checkContentDigest checks a Content-Digest field of exactly one line and
// one member, "sha-256=:<base64>:", against body, accepting either base64
// alphabet (the published vectors use the standard one). The signature
// covers every line and member of the field, so a second one could vouch
// for a second body: it is refused.
func checkContentDigest(lines []string, body []byte) error {
	if len(lines) != 1 || len(lines[0]) > MaxSignatureHeaderBytes {
		return reject(CodeDigestMismatch, 11, "Content-Digest must be one line of at most %d bytes", MaxSignatureHeaderBytes)
	}
	ms, err := sfv.ParseDictionary(lines[0])
	if err != nil {
		return reject(CodeDigestMismatch, 11, "Content-Digest does not parse")
	}
	m, n := sfv.Find(ms, "sha-256")
	if n != 1 || len(ms) != 1 || m.IsList {
		return reject(CodeDigestMismatch, 11, "Content-Digest must hold exactly one member, sha-256")
	}
	got, err := decodeBase64Either(m.Bytes)
	want := sha256.Sum256(body)
	if err != nil || subtle.ConstantTimeCompare(got, want[:]) != 1 {
		return reject(CodeDigestMismatch, 11, "Content-Digest does not match the body")
	}
	return nil
}

// MinCredentialsLength is the shortest legacy HMAC secret, in characters,
// that [VerifyLegacyHMAC] accepts: as short as a seller using this module
// accepts for a registration's legacy authentication.
const MinCredentialsLength = 32

// LegacyHMACWindow is how far X-ADCP-Timestamp may be from now.
const LegacyHMACWindow = 300 * time.Second

// LegacyHMAC returns the lowercase hex HMAC-SHA256 of "<timestamp>.<body>"
// keyed by credentials: the X-ADCP-Signature value after "sha256=" in the
// legacy scheme. The seller's webhook.HTTPSender sends it, and
// [VerifyLegacyHMAC] checks it.
func LegacyHMAC(credentials, timestamp string, body []byte) string {
	return hex.EncodeToString(legacyMAC(credentials, timestamp, body))
}

// legacyMAC is the raw HMAC-SHA256 behind [LegacyHMAC].
func legacyMAC(credentials, timestamp string, body []byte) []byte {
	m := hmac.New(sha256.New, []byte(credentials))
	m.Write([]byte(timestamp))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

// VerifyLegacyHMAC checks the legacy HMAC-SHA256 scheme: X-ADCP-Timestamp
// within ±300 s of now and X-ADCP-Signature equal, in constant time, to
// "sha256=" + [LegacyHMAC](credentials, timestamp, body). It returns a
// [*VerifyError] for a webhook that fails, and a [*ConfigError] (wrapping
// [ErrInvalidConfig]) when credentials are shorter than
// [MinCredentialsLength] characters.
func VerifyLegacyHMAC(header http.Header, body []byte, credentials string, now time.Time) error {
	if n := utf8.RuneCountInString(credentials); n < MinCredentialsLength {
		return badConfig("VerifyLegacyHMAC credentials", "have %d characters; pass the secret registered with the seller, which has at least %d", n, MinCredentialsLength)
	}
	if header.Get("Signature-Input") != "" || header.Get("Signature") != "" {
		return reject(CodeModeMismatch, 1, "the webhook carries an RFC 9421 signature, not the legacy HMAC signature this registration expects")
	}
	if header.Get("X-ADCP-Signature") == "" && strings.HasPrefix(header.Get("Authorization"), "Bearer ") {
		return reject(CodeModeMismatch, 1, "the webhook carries a Bearer token, not the legacy HMAC signature this registration expects")
	}
	ts := header.Get("X-ADCP-Timestamp")
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return reject(CodeHeaderMalformed, 1, "X-ADCP-Timestamp is not a Unix time")
	}
	if d := now.Sub(time.Unix(sec, 0)); d > LegacyHMACWindow || d < -LegacyHMACWindow {
		return reject(CodeWindowInvalid, 5, "X-ADCP-Timestamp is %v from now; at most %v is allowed", d.Round(time.Second), LegacyHMACWindow)
	}
	got, ok := strings.CutPrefix(header.Get("X-ADCP-Signature"), "sha256=")
	if !ok {
		return reject(CodeHeaderMalformed, 1, "X-ADCP-Signature must start with sha256=")
	}
	gotMAC, err := hex.DecodeString(got)
	if err != nil || !hmac.Equal(gotMAC, legacyMAC(credentials, ts, body)) {
		return reject(CodeSignatureInvalid, 10, "X-ADCP-Signature does not match")
	}
	if err := strictjson.Check(body); err != nil {
		return reject(CodeBodyMalformed, 14, "the body (%d bytes) is %v", len(body), err)
	}
	return nil
}

// VerifyLegacyBearer checks the legacy Bearer scheme: an Authorization
// field "Bearer <token>" equal, in constant time, to the token the buyer
// registered, and a strict JSON body. Bearer binds nothing of the body, the
// URL or the time; AdCP 3.2 deprecates it. A webhook carrying an RFC 9421
// signature, or a legacy HMAC one, is [CodeModeMismatch]; a wrong or
// missing token is [CodeSignatureInvalid]. A token shorter than
// [MinCredentialsLength] characters is a [*ConfigError].
func VerifyLegacyBearer(header http.Header, body []byte, token string) error {
	if n := utf8.RuneCountInString(token); n < MinCredentialsLength {
		return badConfig("VerifyLegacyBearer token", "has %d characters; pass the token registered with the seller, which has at least %d", n, MinCredentialsLength)
	}
	switch {
	case header.Get("Signature-Input") != "" || header.Get("Signature") != "":
		return reject(CodeModeMismatch, 1, "the webhook carries an RFC 9421 signature, not the Bearer token this registration expects")
	case header.Get("X-ADCP-Signature") != "":
		return reject(CodeModeMismatch, 1, "the webhook carries a legacy HMAC signature, not the Bearer token this registration expects")
	}
	got, ok := strings.CutPrefix(header.Get("Authorization"), "Bearer ")
	if !ok || len(header.Values("Authorization")) != 1 || subtle.ConstantTimeCompare([]byte(got), []byte(token)) != 1 {
		return reject(CodeSignatureInvalid, 10, "the Authorization field does not carry the registered Bearer token")
	}
	if err := strictjson.Check(body); err != nil {
		return reject(CodeBodyMalformed, 14, "the body (%d bytes) is %v", len(body), err)
	}
	return nil
}
