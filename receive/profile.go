package receive

import "time"

// The AdCP RFC 9421 webhook-signing profile. The seller's signer
// (webhook.RFC9421Signer) and the [Verifier] both use these.
const (
	// SignatureTag is the tag parameter of every webhook signature.
	SignatureTag = "adcp/webhook-signing/v1"
	// SignatureLabel is the label of the webhook signature in the
	// Signature-Input and Signature headers.
	SignatureLabel = "sig1"
	// SignatureWindow is expires minus created: the longest a signature
	// may be valid.
	SignatureWindow = 300 * time.Second

	// AlgEd25519 is the Ed25519 signature algorithm.
	AlgEd25519 = "ed25519"
	// AlgECDSAP256 is ECDSA on P-256 with SHA-256, the signature encoded as
	// the 64-byte r||s.
	AlgECDSAP256 = "ecdsa-p256-sha256"
)

// MaxBodyBytes is the largest webhook body a seller using this module
// sends: 10 MiB. A receiver can read at most MaxBodyBytes+1 bytes and
// refuse a request that has more, before verifying it.
const MaxBodyBytes = 10 << 20
