package webhook

import (
	"cmp"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/adcpkit/webhook/internal/ident"
)

// This file holds EncryptionKeys, the key ring that encrypts what a
// PostgresSupervisor stores of a delivery's secrets (body, legacy
// credentials, header values, payload fingerprint), and the sealed format.

// ErrCannotDecrypt reports a stored value that cannot be decrypted: sealed
// with a key the ring does not hold, altered, or moved from another
// delivery or column. A delivery whose row cannot be decrypted fails alone,
// with this reason in its LastError.
var ErrCannotDecrypt = errors.New("webhook: stored delivery cannot be decrypted")

// EncryptionKeySize is the size of every key in an [EncryptionKeys] ring:
// AES-256.
const EncryptionKeySize = 32

// EncryptionKeys is a key ring for encryption at rest
// ([PostgresConfig.Encryption]): AES-256-GCM keys by ID, one of them
// current. The current key encrypts every value written; any key of the
// ring decrypts the values it encrypted, which name it. A ring with no
// current key only decrypts: values are written in plain text.
//
// A ring is immutable. To rotate without failing a delivery, every
// process must be able to decrypt a key before any process encrypts with
// it: first give every process a ring that holds the new key while the
// old one stays current, then one whose current key is the new one, then
// re-encrypt the stored rows ([PostgresSupervisor.Reencrypt], webhookctl
// reencrypt), then drop the old key. (Turning encryption on is the same,
// from a ring with no current key.)
//
// Its String and error messages never include key material.
type EncryptionKeys struct {
	current string
	aeads   map[string]cipher.AEAD
}

// NewEncryptionKeys returns the ring of keys (ID to 32 random bytes) whose
// current key is current ("" for a ring that only decrypts). IDs match
// ^[A-Za-z0-9_.:-]{1,64}$. Generate a key with crypto/rand
// ([GenerateEncryptionKey]) and keep it in your secret store, apart from
// the database.
func NewEncryptionKeys(current string, keys map[string][]byte) (*EncryptionKeys, error) {
	if len(keys) == 0 {
		return nil, badConfig("EncryptionKeys", "holds no key")
	}
	if _, ok := keys[current]; !ok && current != "" {
		return nil, badConfig("EncryptionKeys", "the current key %q is not in the ring; list it with the others", current)
	}
	r := &EncryptionKeys{current: current, aeads: make(map[string]cipher.AEAD, len(keys))}
	for id, key := range keys {
		if !ident.Valid(id, 1, 64) || id == "none" {
			return nil, badConfig("EncryptionKeys", "key ID %q must match ^[A-Za-z0-9_.:-]{1,64}$ and not be \"none\"", id)
		}
		if len(key) != EncryptionKeySize {
			return nil, badConfig("EncryptionKeys", "key %q has %d bytes; AES-256 keys have %d (GenerateEncryptionKey makes one)", id, len(key), EncryptionKeySize)
		}
		block, err := aes.NewCipher(key)
		if err != nil {
			return nil, badConfig("EncryptionKeys", "key %q: %v", id, err)
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, badConfig("EncryptionKeys", "key %q: %v", id, err)
		}
		r.aeads[id] = aead
	}
	return r, nil
}

// GenerateEncryptionKey returns 32 bytes from crypto/rand: a new key for
// an [EncryptionKeys] ring.
func GenerateEncryptionKey() ([]byte, error) {
	key := make([]byte, EncryptionKeySize)
	if _, err := io.ReadFull(rand.Reader, key); err != nil {
		return nil, fmt.Errorf("webhook: generating an encryption key: %w", err)
	}
	return key, nil
}

// ParseEncryptionKeys reads a ring from text, the form webhookctl takes
// in the WEBHOOK_ENCRYPTION_KEYS environment variable: comma-separated
// "id:key" pairs, key in standard or URL-safe base64 (padded or not), the
// current key first. For example "k2:base64…,k1:base64…". A first item
// "none" makes a ring with no current key, which only decrypts:
// "none,k1:base64…".
func ParseEncryptionKeys(text string) (*EncryptionKeys, error) {
	keys := map[string][]byte{}
	current := ""
	items := strings.Split(strings.TrimSpace(text), ",")
	first := 0
	if strings.TrimSpace(items[0]) == "none" {
		first = 1
	}
	for i, item := range items[first:] {
		item = strings.TrimSpace(item)
		cut := strings.LastIndexByte(item, ':') // IDs may hold colons; base64 never does
		if cut <= 0 {
			return nil, badConfig("EncryptionKeys", "item %d is not id:base64key", first+i+1)
		}
		id, enc := item[:cut], item[cut+1:]
		key, err := decodeKey(enc)
		if err != nil {
			return nil, badConfig("EncryptionKeys", "key %q is not base64", id)
		}
		if _, dup := keys[id]; dup {
			return nil, badConfig("EncryptionKeys", "key %q is listed twice", id)
		}
		keys[id] = key
		if i == 0 && first == 0 {
			current = id
		}
	}
	return NewEncryptionKeys(current, keys)
}

// decodeKey reads base64 in any of its four common forms.
func decodeKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			return b, nil
		}
	}
	return nil, errors.New("not base64")
}

// Current returns the ID of the key that encrypts, or "" for a ring that
// only decrypts.
func (r *EncryptionKeys) Current() string { return r.current }

// IDs returns the IDs of the ring's keys, sorted.
func (r *EncryptionKeys) IDs() []string {
	out := make([]string, 0, len(r.aeads))
	for id := range r.aeads {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

// String names the keys without their material.
func (r EncryptionKeys) String() string {
	return "EncryptionKeys{current: " + cmp.Or(r.current, "none") + ", keys: " + strings.Join(r.IDs(), ",") + "}"
}

// sealing reports whether r encrypts what is written.
func (r *EncryptionKeys) sealing() bool { return r != nil && r.current != "" }

// Format keeps key material out of every fmt verb.
func (r EncryptionKeys) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, r.String()) }

// sealVersion is the first byte of a sealed value.
const sealVersion = 1

// sealOverheadSQL is, in SQL, how many bytes sealing adds to a value of a
// row: version and key-ID length (2), the key ID, the nonce (12) and the
// tag (16). TestSealOpen holds it to seal's output.
const sealOverheadSQL = `30 + octet_length(sealed_with)`

// The columns a sealed value may be bound to.
const (
	sealBody        = "body"
	sealCredentials = "auth_credentials"
	sealHeaders     = "headers"
	sealFingerprint = "payload_sha256"
)

// sealAD is the additional data that binds a sealed value to one column of
// one delivery: its idempotency key (unique among the deliveries that hold
// sealed values) and its URL, so a value moved to another row or column,
// or a row whose URL was changed, does not decrypt.
func sealAD(column, key, url string) []byte {
	ad := make([]byte, 0, 32+len(column)+len(key)+len(url))
	ad = append(ad, "adcpkit/webhook sealed v1\x00"...)
	ad = append(ad, column...)
	ad = append(ad, 0)
	ad = append(ad, key...)
	ad = append(ad, 0)
	return append(ad, url...)
}

// seal encrypts plaintext with the current key for column of the delivery
// (key, url): version, key ID length and ID, nonce, ciphertext and tag.
func (r *EncryptionKeys) seal(column, key, url string, plaintext []byte) []byte {
	aead := r.aeads[r.current]
	out := make([]byte, 0, 2+len(r.current)+aead.NonceSize()+len(plaintext)+aead.Overhead())
	out = append(out, sealVersion, byte(len(r.current)))
	out = append(out, r.current...)
	nonce := out[len(out) : len(out)+aead.NonceSize()]
	if _, err := io.ReadFull(rand.Reader, nonce); err != nil {
		panic("webhook: crypto/rand failed: " + err.Error()) // crypto/rand does not fail on supported systems
	}
	out = out[:len(out)+aead.NonceSize()]
	return aead.Seal(out, nonce, plaintext, sealAD(column, key, url))
}

// sealedKeyID returns the ID of the key that sealed v.
func sealedKeyID(v []byte) (string, bool) {
	if len(v) < 2 || v[0] != sealVersion || len(v) < 2+int(v[1]) {
		return "", false
	}
	return string(v[2 : 2+int(v[1])]), true
}

// open decrypts what seal sealed for the same column and delivery. Its
// errors match ErrCannotDecrypt and say why without quoting the value.
func (r *EncryptionKeys) open(column, key, url string, v []byte) ([]byte, error) {
	id, ok := sealedKeyID(v)
	if !ok {
		return nil, fmt.Errorf("%w: its %s is not a sealed value", ErrCannotDecrypt, column)
	}
	aead, ok := r.aeads[id]
	if !ok {
		return nil, fmt.Errorf("%w: its %s is sealed with key %q, which the ring (%s) does not hold; add it to PostgresConfig.Encryption", ErrCannotDecrypt, column, id, strings.Join(r.IDs(), ","))
	}
	rest := v[2+len(id):]
	if len(rest) < aead.NonceSize()+aead.Overhead() {
		return nil, fmt.Errorf("%w: its %s is truncated", ErrCannotDecrypt, column)
	}
	plain, err := aead.Open(nil, rest[:aead.NonceSize()], rest[aead.NonceSize():], sealAD(column, key, url))
	if err != nil {
		return nil, fmt.Errorf("%w: its %s does not authenticate under key %q: altered, or moved from another delivery or column, or the row's URL or idempotency key changed", ErrCannotDecrypt, column, id)
	}
	return plain, nil
}
