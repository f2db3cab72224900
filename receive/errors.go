package receive

import (
	"errors"
	"fmt"
)

// Sentinel errors. Match them with [errors.Is]; the errors the package
// returns wrap them with detail meant for people, not for string comparison.
var (
	// ErrSignatureRejected is wrapped by every [*VerifyError]: the webhook
	// is not authentic, or is a replay. Answer it with 401.
	ErrSignatureRejected = errors.New("receive: signature rejected")

	// ErrInvalidConfig reports a bad [VerifierConfig], or legacy HMAC
	// credentials too short to be a secret. It is always wrapped by a
	// [*ConfigError] naming the field.
	ErrInvalidConfig = errors.New("receive: invalid configuration")

	// ErrInvalidKey reports a public key [NewVerifyingKey] cannot use for
	// AdCP webhook signatures; the wrapping error says why.
	ErrInvalidKey = errors.New("receive: invalid verifying key")
)

// Webhook signature error codes, from the AdCP webhook verifier checklist.
// A [*VerifyError] carries one of them in its Code.
const (
	// CodeHeaderMalformed: Signature-Input or Signature is missing or does
	// not parse (step 1).
	CodeHeaderMalformed = "webhook_signature_header_malformed"
	// CodeParamsIncomplete: a required signature parameter is missing or
	// has the wrong type (step 2).
	CodeParamsIncomplete = "webhook_signature_params_incomplete"
	// CodeTagInvalid: the tag is not [SignatureTag] (step 3).
	CodeTagInvalid = "webhook_signature_tag_invalid"
	// CodeAlgNotAllowed: the alg is neither [AlgEd25519] nor
	// [AlgECDSAP256] (step 4).
	CodeAlgNotAllowed = "webhook_signature_alg_not_allowed"
	// CodeWindowInvalid: created and expires are inconsistent, too far
	// apart, in the future or past (step 5).
	CodeWindowInvalid = "webhook_signature_window_invalid"
	// CodeComponentsIncomplete: a required component is not covered, or a
	// covered header is absent (step 6).
	CodeComponentsIncomplete = "webhook_signature_components_incomplete"
	// CodeKeyUnknown: no configured key has the signature's keyid (step 7).
	CodeKeyUnknown = "webhook_signature_key_unknown"
	// CodeKeyPurposeInvalid: the key's adcp_use, key_ops or algorithm does
	// not allow this signature (step 8).
	CodeKeyPurposeInvalid = "webhook_signature_key_purpose_invalid"
	// CodeKeyRevoked: the key is revoked (step 9).
	CodeKeyRevoked = "webhook_signature_key_revoked"
	// CodeRevocationStale: the revocation list is too old to trust
	// (step 9).
	CodeRevocationStale = "webhook_signature_revocation_stale"
	// CodeRateAbuse: the key has more live nonces than the nonce store
	// allows (step 9a).
	CodeRateAbuse = "webhook_signature_rate_abuse"
	// CodeSignatureInvalid: the signature does not verify (step 10).
	CodeSignatureInvalid = "webhook_signature_invalid"
	// CodeDigestMismatch: Content-Digest does not match the body (step 11).
	CodeDigestMismatch = "webhook_signature_digest_mismatch"
	// CodeReplayed: the nonce was already used with this key (step 12).
	CodeReplayed = "webhook_signature_replayed"
	// CodeTargetURIMalformed: the URL the webhook was addressed to cannot
	// be canonicalised (an empty or malformed authority, an IPv6 zone, a
	// request target that is not an origin-form path), so no signature can
	// bind it (step 10).
	CodeTargetURIMalformed = "webhook_target_uri_malformed"
	// CodeBodyMalformed: the signature verified but the body is not one
	// strict JSON value: invalid UTF-8, a syntax error, or an object with
	// duplicate member names (step 14).
	CodeBodyMalformed = "webhook_body_malformed"
	// CodeModeMismatch: the webhook is signed with the other scheme than
	// the one the buyer registered: legacy HMAC headers without an RFC 9421
	// signature at [Verifier.Verify], or an RFC 9421 signature at
	// [VerifyLegacyHMAC]. Answer 401 and alarm; never fall back to the
	// other scheme.
	CodeModeMismatch = "webhook_mode_mismatch"
)

// VerifyError says why a webhook's signature was rejected. Code is the
// AdCP error code a receiver returns (in WWW-Authenticate, say); Step is the
// verifier checklist step that failed. It unwraps to [ErrSignatureRejected].
type VerifyError struct {
	// Code is the AdCP error code, such as [CodeSignatureInvalid].
	Code string
	// Step is the verifier checklist step that failed (1 to 14).
	Step int
	// Reason explains the failure for logs; it holds no key material.
	Reason string
}

// Error returns the code and the reason.
func (e *VerifyError) Error() string {
	return "receive: signature rejected (" + e.Code + "): " + e.Reason
}

// Unwrap returns [ErrSignatureRejected].
func (e *VerifyError) Unwrap() error { return ErrSignatureRejected }

func reject(code string, step int, format string, args ...any) *VerifyError {
	return &VerifyError{Code: code, Step: step, Reason: fmt.Sprintf(format, args...)}
}

// ConfigError describes one invalid configuration field or argument. It
// unwraps to [ErrInvalidConfig].
type ConfigError struct {
	// Field names what is wrong, such as "VerifierConfig.Keys" or
	// "VerifyLegacyHMAC credentials".
	Field string
	// Reason says what is wrong and how to fix it. It never contains
	// secrets.
	Reason string
}

// Error names the field and says what is wrong.
func (e *ConfigError) Error() string {
	return fmt.Sprintf("receive: invalid %s: %s", e.Field, e.Reason)
}

// Unwrap returns [ErrInvalidConfig].
func (e *ConfigError) Unwrap() error { return ErrInvalidConfig }

func badConfig(field, format string, args ...any) *ConfigError {
	return &ConfigError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

func badKey(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidKey, fmt.Sprintf(format, args...))
}
