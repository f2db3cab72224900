// Package receive is the buyer's side of AdCP webhooks: it checks that an
// inbound webhook was signed by the seller, for the URL it arrived at, with
// the body it carries, and not replayed.
//
// It depends only on the standard library (and this module's internal
// helpers), so a buyer's binary does not link the seller's delivery engine
// or its Postgres driver (the root
// package github.com/adcpkit/webhook, which imports this one for the
// signature profile it shares with the buyer).
//
// # Quick start
//
//	keys, err := receive.ParseJWKS(sellerJWKS) // the seller's published JWK Set; check every err
//	verifier, err := receive.NewVerifier(receive.VerifierConfig{Keys: keys})
//
//	func handle(w http.ResponseWriter, r *http.Request) {
//		body, err := io.ReadAll(io.LimitReader(r.Body, receive.MaxBodyBytes+1))
//		if err != nil || len(body) > receive.MaxBodyBytes {
//			http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
//			return
//		}
//		if _, err := verifier.VerifyRequest(r, body); err != nil {
//			var ve *receive.VerifyError
//			if errors.As(err, &ve) {
//				w.Header().Set("WWW-Authenticate", `Signature error="`+ve.Code+`"`)
//			}
//			w.WriteHeader(http.StatusUnauthorized)
//			return
//		}
//		// Authentic: de-duplicate by idempotency_key, then act on it.
//	}
//
// # Signatures
//
// A [Verifier] implements the AdCP RFC 9421 webhook profile
// ([SignatureLabel], [SignatureTag], [AlgEd25519] or [AlgECDSAP256], at most
// [SignatureWindow]) and runs the spec's verifier checklist in order. A
// webhook that fails is a [*VerifyError] wrapping [ErrSignatureRejected];
// its Code is one of the Code constants, such as [CodeSignatureInvalid],
// for the WWW-Authenticate header. [Verifier.VerifyRequest] takes an
// *http.Request; behind a proxy that terminates TLS, set
// [VerifierConfig.ExternalURL] so it checks the URL the seller signed.
// [Verifier.Verify] takes the parts.
//
// # Keys
//
// [ParseJWKS] reads the seller's published JWK Set into [VerifyingKey]
// values; [NewVerifyingKey] wraps a Go public key. A [KeyRevocations], such
// as a [RevocationList] you refresh from the seller's revocation feed,
// retires keys.
//
// # Replay
//
// Every accepted signature's nonce is recorded in a [NonceStore] until the
// signature expires, and a second use is rejected with [CodeReplayed]. The
// default [MemoryNonceStore] serves one process; buyers running several
// replicas behind a load balancer give them a shared NonceStore. A replay
// check does not replace de-duplication by idempotency key: a seller
// retrying a webhook signs it afresh.
//
// # Legacy HMAC
//
// Webhooks registered with legacy HMAC-SHA256 authentication carry no
// RFC 9421 signature; check them with [VerifyLegacyHMAC], which recomputes
// [LegacyHMAC] over the timestamp and body.
package receive
