package webhook

import (
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/adcpkit/webhook/internal/canon"
	"github.com/adcpkit/webhook/internal/jwk"
	"github.com/adcpkit/webhook/receive"
)

// coveredComponents is the profile's component list, in order.
const coveredComponents = `("@method" "@target-uri" "@authority" "content-type" "content-digest")`

func badKey(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidKey, fmt.Sprintf(format, args...))
}

// SigningKey is a private key with its key ID and algorithm. Its String and
// error messages never include key material.
type SigningKey struct {
	keyID string
	alg   string
	key   *keyMaterial
}

// keyMaterial holds the private key one pointer away from SigningKey, so
// that fmt, which prints a nested pointer as an address, never prints the
// key's bytes, even for the verbs (%p on a value) and nestings (a
// SigningKey inside another struct) where it ignores Format.
type keyMaterial struct {
	crypto.Signer // ed25519.PrivateKey or *ecdsa.PrivateKey on P-256
}

// NewSigningKey wraps an ed25519.PrivateKey or a P-256 *ecdsa.PrivateKey.
// keyID is the kid the buyer finds in the seller's published JWKS: printable
// ASCII without quotes or backslashes.
func NewSigningKey(keyID string, key crypto.Signer) (*SigningKey, error) {
	if keyID == "" {
		return nil, badKey("key ID is empty")
	}
	for i := 0; i < len(keyID); i++ {
		if c := keyID[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			return nil, badKey("key ID has byte 0x%02x; use printable ASCII without quotes or backslashes", c)
		}
	}
	switch k := key.(type) {
	case ed25519.PrivateKey:
		if len(k) != ed25519.PrivateKeySize {
			return nil, badKey("Ed25519 private key has %d bytes, want %d", len(k), ed25519.PrivateKeySize)
		}
		return &SigningKey{keyID: keyID, alg: receive.AlgEd25519, key: &keyMaterial{k}}, nil
	case *ecdsa.PrivateKey:
		if k == nil || k.Curve != elliptic.P256() {
			return nil, badKey("ECDSA keys must be on P-256")
		}
		return &SigningKey{keyID: keyID, alg: receive.AlgECDSAP256, key: &keyMaterial{k}}, nil
	case nil:
		return nil, badKey("key is nil")
	}
	return nil, badKey("%T is not supported; use an ed25519.PrivateKey or a P-256 *ecdsa.PrivateKey", key)
}

// KeyID returns the key's kid.
func (k *SigningKey) KeyID() string { return k.keyID }

// Algorithm returns [receive.AlgEd25519] or [receive.AlgECDSAP256].
func (k *SigningKey) Algorithm() string { return k.alg }

// Public returns the public key.
func (k *SigningKey) Public() crypto.PublicKey { return k.key.Public() }

// GenerateSigningKey makes a new signing key from crypto/rand: Ed25519 for
// alg [receive.AlgEd25519] (or ""), P-256 for [receive.AlgECDSAP256]. Keep
// its [SigningKey.PrivateJWK] in your secret store and publish its
// [PublicJWKS] at the jwks_uri of your brand.json agents[] entry.
func GenerateSigningKey(keyID, alg string) (*SigningKey, error) {
	switch alg {
	case "", receive.AlgEd25519:
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, badKey("generating an Ed25519 key: %v", err)
		}
		return NewSigningKey(keyID, priv)
	case receive.AlgECDSAP256:
		priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, badKey("generating a P-256 key: %v", err)
		}
		return NewSigningKey(keyID, priv)
	}
	return nil, badKey("algorithm %q is not one the AdCP webhook profile allows; use %q or %q", alg, receive.AlgEd25519, receive.AlgECDSAP256)
}

// PrivateJWK returns the key, private part included, as a JWK that
// [ParseJWKSigningKey] reads back: for the seller's secret store, never
// for publication (publish [PublicJWKS]). It is the key itself; treat the
// bytes as the secret they are.
func (k *SigningKey) PrivateJWK() ([]byte, error) {
	j := k.jwk()
	switch priv := k.key.Signer.(type) {
	case ed25519.PrivateKey:
		j["d"] = base64.RawURLEncoding.EncodeToString(priv.Seed())
	case *ecdsa.PrivateKey:
		d, err := priv.Bytes()
		if err != nil {
			return nil, badKey("P-256 key does not encode")
		}
		j["d"] = base64.RawURLEncoding.EncodeToString(d)
	}
	j["key_ops"] = []string{"sign"}
	return json.Marshal(j)
}

// PublicJWKS returns the public halves of keys as a JWKS ({"keys":[...]})
// for the jwks_uri of the seller's brand.json agents[] entry. During a
// rotation it holds the old key and the new one.
func PublicJWKS(keys ...*SigningKey) ([]byte, error) {
	set := struct {
		Keys []json.RawMessage `json:"keys"`
	}{Keys: []json.RawMessage{}}
	for _, k := range keys {
		if k == nil || k.key == nil {
			return nil, badKey("PublicJWKS got a nil key")
		}
		pub, err := k.PublicJWK()
		if err != nil {
			return nil, err
		}
		set.Keys = append(set.Keys, pub)
	}
	return json.Marshal(set)
}

// PublicJWK returns the public half as a JWK for the seller's published
// JWKS, with adcp_use "request-signing" and key_ops ["verify"].
func (k *SigningKey) PublicJWK() ([]byte, error) {
	return json.Marshal(k.jwk())
}

// jwk is the key's public JWK members.
func (k *SigningKey) jwk() map[string]any {
	j := map[string]any{"kid": k.keyID, "use": "sig", "key_ops": []string{"verify"}, "adcp_use": "request-signing"}
	switch pub := k.key.Public().(type) {
	case ed25519.PublicKey:
		j["kty"], j["crv"], j["alg"] = "OKP", "Ed25519", "EdDSA"
		j["x"] = base64.RawURLEncoding.EncodeToString(pub)
	case *ecdsa.PublicKey:
		j["kty"], j["crv"], j["alg"] = "EC", "P-256", "ES256"
		j["x"] = base64.RawURLEncoding.EncodeToString(pub.X.FillBytes(make([]byte, 32)))
		j["y"] = base64.RawURLEncoding.EncodeToString(pub.Y.FillBytes(make([]byte, 32)))
	}
	return j
}

// VerifyingKey returns the public half for a [receive.Verifier], with
// adcp_use "request-signing" and key_ops ["verify"], as [SigningKey.PublicJWK]
// publishes it. A SigningKey not built by this package's constructors yields
// the zero VerifyingKey, which [receive.NewVerifier] refuses.
func (k *SigningKey) VerifyingKey() receive.VerifyingKey {
	if k == nil || k.key == nil || isNil(k.key.Signer) {
		return receive.VerifyingKey{}
	}
	vk, err := receive.NewVerifyingKey(k.keyID, "request-signing", k.key.Public())
	if err != nil {
		return receive.VerifyingKey{}
	}
	vk.KeyOps = []string{"verify"}
	return vk
}

// String names the key without its material.
func (k SigningKey) String() string { return "SigningKey{kid: " + k.keyID + ", alg: " + k.alg + "}" }

// GoString keeps key material out of %#v.
func (k SigningKey) GoString() string { return k.String() }

// Format keeps key material out of every fmt verb.
func (k SigningKey) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, k.String()) }

// ParsePEMSigningKey reads a PKCS#8 "PRIVATE KEY" PEM block holding an
// Ed25519 or P-256 key.
func ParsePEMSigningKey(keyID string, data []byte) (*SigningKey, error) {
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, badKey("no PKCS#8 \"PRIVATE KEY\" PEM block found")
	}
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, badKey("PKCS#8 key does not parse")
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, badKey("%T is not a signing key", key)
	}
	return NewSigningKey(keyID, signer)
}

// ParseJWKSigningKey reads a private JWK: kty OKP with crv Ed25519, or kty EC
// with crv P-256; alg, when present, must agree (EdDSA or ES256); adcp_use
// must be "request-signing" or the deprecated "webhook-signing".
func ParseJWKSigningKey(data []byte) (*SigningKey, error) {
	var j jwk.Key
	if err := json.Unmarshal(data, &j); err != nil {
		return nil, badKey("JWK is not a JSON object")
	}
	var set struct {
		Keys json.RawMessage `json:"keys"`
	}
	if json.Unmarshal(data, &set) == nil && set.Keys != nil && j.Kty == "" {
		return nil, badKey("this is a JWKS (a key set, {\"keys\":[...]}), not one JWK: pass the one private key to sign with")
	}
	switch j.AdcpUse {
	case "request-signing", "webhook-signing":
	case "":
		return nil, badKey("JWK has no adcp_use; set it to \"request-signing\"")
	default:
		return nil, badKey("JWK adcp_use is %q; webhooks are signed with a \"request-signing\" key", j.AdcpUse)
	}
	if j.D == "" {
		return nil, badKey("JWK %q has no private part (d)", j.Kid)
	}
	d, err := base64.RawURLEncoding.DecodeString(j.D)
	if err != nil {
		return nil, badKey("JWK d is not base64url")
	}
	switch {
	case j.Kty == "OKP" && j.Crv == "Ed25519":
		if j.Alg != "" && j.Alg != "EdDSA" && j.Alg != "Ed25519" {
			return nil, badKey("JWK alg %q does not match curve Ed25519", j.Alg)
		}
		if len(d) != ed25519.SeedSize {
			return nil, badKey("Ed25519 JWK d has %d bytes, want %d", len(d), ed25519.SeedSize)
		}
		key := ed25519.NewKeyFromSeed(d)
		if j.X != "" {
			if x, err := base64.RawURLEncoding.DecodeString(j.X); err != nil || string(x) != string(key.Public().(ed25519.PublicKey)) {
				return nil, badKey("JWK x does not match d")
			}
		}
		return NewSigningKey(j.Kid, key)
	case j.Kty == "EC" && j.Crv == "P-256":
		if j.Alg != "" && j.Alg != "ES256" {
			return nil, badKey("JWK alg %q does not match curve P-256", j.Alg)
		}
		key, err := p256PrivateKey(leftPad(d, 32))
		if err != nil {
			return nil, err
		}
		if j.X != "" || j.Y != "" {
			x, errX := base64.RawURLEncoding.DecodeString(j.X)
			y, errY := base64.RawURLEncoding.DecodeString(j.Y)
			if errX != nil || errY != nil || key.X.Cmp(new(big.Int).SetBytes(x)) != 0 || key.Y.Cmp(new(big.Int).SetBytes(y)) != 0 {
				return nil, badKey("JWK x and y do not match d")
			}
		}
		return NewSigningKey(j.Kid, key)
	}
	return nil, badKey("JWK kty %q crv %q is not supported; use OKP/Ed25519 or EC/P-256", j.Kty, j.Crv)
}

// p256PrivateKey builds a P-256 ECDSA key from its 32-byte scalar.
func p256PrivateKey(d []byte) (*ecdsa.PrivateKey, error) {
	priv, err := ecdh.P256().NewPrivateKey(d)
	if err != nil {
		return nil, badKey("P-256 JWK d is not a valid private key")
	}
	pub := priv.PublicKey().Bytes() // 0x04 || X || Y
	return &ecdsa.PrivateKey{
		PublicKey: ecdsa.PublicKey{
			Curve: elliptic.P256(),
			X:     new(big.Int).SetBytes(pub[1:33]),
			Y:     new(big.Int).SetBytes(pub[33:]),
		},
		D: new(big.Int).SetBytes(d),
	}, nil
}

func leftPad(b []byte, n int) []byte {
	if len(b) >= n {
		return b
	}
	return append(make([]byte, n-len(b)), b...)
}

// Signer signs an outgoing webhook request. Sign adds headers to r for the
// exact body that will be sent; it must not read r.Body. Implementations must
// be safe for concurrent use.
type Signer interface {
	Sign(r *http.Request, body []byte) error
}

// SignerFunc adapts a function to [Signer].
type SignerFunc func(r *http.Request, body []byte) error

// Sign calls f(r, body).
func (f SignerFunc) Sign(r *http.Request, body []byte) error { return f(r, body) }

// SignerConfig configures [NewRFC9421Signer].
type SignerConfig struct {
	// Key signs every attempt. Set Key or Keys.
	Key *SigningKey
	// Keys holds many tenants' keys: each attempt is signed with the
	// current key of its delivery's Routing.Tenant ("" for none). Set Key
	// or Keys.
	Keys *SigningKeys
	// Now is the clock for the created parameter. Defaults to time.Now.
	Now func() time.Time
	// Rand supplies the 16 nonce bytes of each signature. Defaults to
	// crypto/rand. (ECDSA's own randomness always comes from crypto/rand.)
	Rand io.Reader
}

// RFC9421Signer signs webhooks per the AdCP RFC 9421 webhook profile: label
// sig1, components "@method" "@target-uri" "@authority" "content-type"
// "content-digest", parameters created, expires (created + 300 s), a fresh
// 16-byte nonce, keyid, alg and tag "adcp/webhook-signing/v1", with the
// target URI and authority in AdCP canonical form. It sets Content-Digest,
// Signature-Input and Signature. With [SignerConfig.Keys] it is a
// [TenantSigner]. It is safe for concurrent use.
type RFC9421Signer struct {
	key  *SigningKey  // SignerConfig.Key, or nil
	keys *SigningKeys // SignerConfig.Keys, or nil
	now  func() time.Time
	rand io.Reader
}

// String names the signer's key, without its material.
func (s RFC9421Signer) String() string {
	if s.keys != nil {
		return "RFC9421Signer{tenants}"
	}
	return "RFC9421Signer{" + s.key.String() + "}"
}

// Format keeps key material out of every fmt verb.
func (s RFC9421Signer) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, s.String()) }

// NewRFC9421Signer returns a signer for cfg.Key or cfg.Keys.
func NewRFC9421Signer(cfg SignerConfig) (*RFC9421Signer, error) {
	switch {
	case cfg.Keys != nil && cfg.Key != nil:
		return nil, badConfig("SignerConfig.Key", "is set with Keys; set one: Key for one key, Keys for many tenants' (put the default key in Keys as tenant \"\")")
	case cfg.Keys != nil:
	case cfg.Key == nil || cfg.Key.key == nil || isNil(cfg.Key.key.Signer):
		return nil, badConfig("SignerConfig.Key", "is missing; load one with ParseJWKSigningKey, ParsePEMSigningKey or NewSigningKey, or set Keys")
	}
	s := &RFC9421Signer{key: cfg.Key, keys: cfg.Keys, now: cfg.Now, rand: cfg.Rand}
	if s.now == nil {
		s.now = time.Now
	}
	if s.rand == nil {
		s.rand = rand.Reader
	}
	return s, nil
}

// Sign sets r's Content-Digest, Signature-Input and Signature headers for
// body, with the default tenant's key. r.URL must be an absolute http or
// https URL.
func (s *RFC9421Signer) Sign(r *http.Request, body []byte) error {
	return s.SignTenant(r, body, "")
}

// SignTenant signs as Sign does, with tenant's current key. A signer made
// with one Key signs for the tenant "" only.
func (s *RFC9421Signer) SignTenant(r *http.Request, body []byte, tenant string) error {
	key, err := s.keyFor(tenant)
	if err != nil {
		return err
	}
	// Not r.URL.String(): it percent-encodes a U-label host, which the
	// canonical form turns into its A-label instead.
	headers, _, err := sign(key, s.now, s.rand, r.Method, r.URL.Scheme+"://"+r.URL.Host+r.URL.RequestURI(), body)
	if err != nil {
		return err
	}
	for _, h := range headers {
		r.Header.Set(h[0], h[1])
	}
	return nil
}

// CheckTenant returns nil when tenant has a key to sign with.
func (s *RFC9421Signer) CheckTenant(tenant string) error {
	_, err := s.keyFor(tenant)
	return err
}

// keyFor is the key that signs for tenant now.
func (s *RFC9421Signer) keyFor(tenant string) (*SigningKey, error) {
	if s.keys != nil {
		if k, ok := s.keys.Current(tenant); ok {
			return k, nil
		}
		return nil, s.keys.CheckTenant(tenant)
	}
	if tenant != "" {
		return nil, fmt.Errorf("%w: tenant %q: this signer has one key (SignerConfig.Key); give it SignerConfig.Keys to sign for tenants", ErrSigningKeyMissing, tenant)
	}
	return s.key, nil
}

// sign returns the headers to set and the signature base it signed.
func sign(key *SigningKey, now func() time.Time, rnd io.Reader, method, rawURL string, body []byte) (headers [4][2]string, base string, err error) {
	target, authority, err := canon.Target(rawURL)
	if err != nil {
		return headers, "", fmt.Errorf("webhook: signing: %w", err)
	}
	var nonce [16]byte
	if _, err := io.ReadFull(rnd, nonce[:]); err != nil {
		return headers, "", fmt.Errorf("webhook: signing: reading nonce: %w", err)
	}
	created := now().Unix()
	digest := sha256.Sum256(body)
	contentDigest := "sha-256=:" + base64.StdEncoding.EncodeToString(digest[:]) + ":"
	params := coveredComponents +
		";created=" + strconv.FormatInt(created, 10) +
		";expires=" + strconv.FormatInt(created+int64(receive.SignatureWindow/time.Second), 10) +
		`;nonce="` + base64.RawURLEncoding.EncodeToString(nonce[:]) + `"` +
		`;keyid="` + key.keyID + `"` +
		`;alg="` + key.alg + `"` +
		`;tag="` + receive.SignatureTag + `"`
	base = signatureBase(method, target, authority, "application/json", contentDigest, params)
	sig, err := key.signBase([]byte(base))
	if err != nil {
		return headers, "", err
	}
	headers = [4][2]string{
		{"Content-Type", "application/json"},
		{"Content-Digest", contentDigest},
		{"Signature-Input", receive.SignatureLabel + "=" + params},
		{"Signature", receive.SignatureLabel + "=:" + base64.RawURLEncoding.EncodeToString(sig) + ":"},
	}
	return headers, base, nil
}

// signatureBase lays out the RFC 9421 §2.5 signature base for the profile's
// components: one line per component, then "@signature-params", joined by
// LF with no trailing newline.
func signatureBase(method, target, authority, contentType, contentDigest, params string) string {
	var b strings.Builder
	b.Grow(200 + len(target) + len(params))
	b.WriteString(`"@method": `)
	b.WriteString(strings.ToUpper(method))
	b.WriteString("\n\"@target-uri\": ")
	b.WriteString(target)
	b.WriteString("\n\"@authority\": ")
	b.WriteString(authority)
	b.WriteString("\n\"content-type\": ")
	b.WriteString(contentType)
	b.WriteString("\n\"content-digest\": ")
	b.WriteString(contentDigest)
	b.WriteString("\n\"@signature-params\": ")
	b.WriteString(params)
	return b.String()
}

// signBase signs a signature base: Ed25519 directly, ECDSA over its SHA-256
// as the 64-byte r||s.
func (k *SigningKey) signBase(base []byte) ([]byte, error) {
	switch key := k.key.Signer.(type) {
	case ed25519.PrivateKey:
		return ed25519.Sign(key, base), nil
	case *ecdsa.PrivateKey:
		h := sha256.Sum256(base)
		r, s, err := ecdsa.Sign(rand.Reader, key, h[:])
		if err != nil {
			return nil, fmt.Errorf("webhook: signing: %w", err)
		}
		sig := make([]byte, 64)
		r.FillBytes(sig[:32])
		s.FillBytes(sig[32:])
		return sig, nil
	}
	return nil, badKey("unsupported key type")
}
