package webhook

import (
	"bytes"
	"strings"
	"testing"
)

// The sealed format: a value opens only for its column and delivery, and
// names its key.
func TestSealOpen(t *testing.T) {
	t.Parallel()
	key := bytes.Repeat([]byte{7}, EncryptionKeySize)
	r, err := NewEncryptionKeys("k1", map[string][]byte{"k1": key})
	if err != nil {
		t.Fatal(err)
	}
	plain := []byte(`{"secret":true}`)
	v := r.seal(sealBody, "key_0123456789abcdef", "https://b.example/h", plain)
	if id, ok := sealedKeyID(v); !ok || id != "k1" {
		t.Fatalf("sealed value names %q, %v", id, ok)
	}
	if len(v) != len(plain)+30+len("k1") { // sealOverheadSQL
		t.Fatalf("a sealed value of %d bytes has %d", len(plain), len(v))
	}
	if bytes.Contains(v, plain) {
		t.Fatal("the plaintext is in the sealed value")
	}
	got, err := r.open(sealBody, "key_0123456789abcdef", "https://b.example/h", v)
	if err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("open: %q, %v", got, err)
	}
	if w := r.seal(sealBody, "key_0123456789abcdef", "https://b.example/h", plain); bytes.Equal(w, v) {
		t.Fatal("two seals of one value are equal: the nonce is not fresh")
	}
	for name, c := range map[string]struct{ column, key, url string }{
		"column": {sealCredentials, "key_0123456789abcdef", "https://b.example/h"},
		"key":    {sealBody, "key_0123456789abcdeX", "https://b.example/h"},
		"url":    {sealBody, "key_0123456789abcdef", "https://b.example/x"},
	} {
		if _, err := r.open(c.column, c.key, c.url, v); err == nil || !strings.Contains(err.Error(), "does not authenticate") {
			t.Errorf("another %s: %v", name, err)
		}
	}
	flipped := bytes.Clone(v)
	flipped[len(flipped)-1] ^= 1
	if _, err := r.open(sealBody, "key_0123456789abcdef", "https://b.example/h", flipped); err == nil {
		t.Error("an altered value opened")
	}
	for _, bad := range [][]byte{nil, {1}, {2, 2, 'k', '1'}, v[:10]} {
		if _, err := r.open(sealBody, "key_0123456789abcdef", "https://b.example/h", bad); err == nil {
			t.Errorf("%x opened", bad)
		}
	}
	other, _ := NewEncryptionKeys("k2", map[string][]byte{"k2": key})
	if _, err := other.open(sealBody, "key_0123456789abcdef", "https://b.example/h", v); err == nil || !strings.Contains(err.Error(), `key "k1"`) {
		t.Errorf("a ring without k1: %v", err)
	}
}

// BenchmarkSealDelivery is the CPU cost of encryption at rest for one
// delivery with a body of each size: sealing its body, fingerprint,
// credentials and headers at acceptance, and opening them at its claim.
//
//	go test -run '^$' -bench BenchmarkSealDelivery
func BenchmarkSealDelivery(b *testing.B) {
	r, _ := NewEncryptionKeys("k1", map[string][]byte{"k1": bytes.Repeat([]byte{7}, EncryptionKeySize)})
	creds := bytes.Repeat([]byte("c"), 48)
	headers := []byte(`{"X-A2A-Notification-Token":"0123456789abcdef0123456789abcdef"}`)
	fp := bytes.Repeat([]byte{1}, 32)
	for _, size := range []int{1 << 10, 16 << 10, 256 << 10} {
		name := map[int]string{1 << 10: "1KiB", 16 << 10: "16KiB", 256 << 10: "256KiB"}[size]
		body := bytes.Repeat([]byte("x"), size)
		const key, url = "whk_0123456789abcdef0123456789", "https://buyer.example/hook"
		b.Run(name+"/seal", func(b *testing.B) {
			b.SetBytes(int64(size))
			for b.Loop() {
				r.seal(sealBody, key, url, body)
				r.seal(sealFingerprint, key, url, fp)
				r.seal(sealCredentials, key, url, creds)
				r.seal(sealHeaders, key, url, headers)
			}
		})
		sb, sf, sc, sh := r.seal(sealBody, key, url, body), r.seal(sealFingerprint, key, url, fp), r.seal(sealCredentials, key, url, creds), r.seal(sealHeaders, key, url, headers)
		b.Run(name+"/open", func(b *testing.B) {
			b.SetBytes(int64(size))
			for b.Loop() {
				_, _ = r.open(sealBody, key, url, sb)
				_, _ = r.open(sealFingerprint, key, url, sf)
				_, _ = r.open(sealCredentials, key, url, sc)
				_, _ = r.open(sealHeaders, key, url, sh)
			}
		})
	}
}
