package webhook

import (
	"fmt"
	"slices"

	"github.com/adcpkit/webhook/receive"
)

// WebhookSigningCapability is the webhook_signing object a seller puts in
// its get_adcp_capabilities response (AdCP 3.2): what buyers may expect
// of its webhooks. Build it with [WebhookSigning], so that it says what
// the configured sender and supervisor do.
type WebhookSigningCapability struct {
	// Supported reports that webhooks are signed with the AdCP RFC 9421
	// webhook profile.
	Supported bool `json:"supported"`
	// Profile is the signing profile, the tag of every signature.
	Profile string `json:"profile,omitempty"`
	// Algorithms are the signature algorithms in use.
	Algorithms []string `json:"algorithms,omitempty"`
	// LegacyHMACFallback reports that the seller accepts legacy HMAC-SHA256
	// push-notification authentication from buyers that asked for it
	// (deprecated; removed in AdCP 4.0).
	LegacyHMACFallback bool `json:"legacy_hmac_fallback"`
	// DeliveryRetryHorizonSeconds is the retry horizon: how long after its
	// first attempt a delivery may still be attempted.
	DeliveryRetryHorizonSeconds int64 `json:"delivery_retry_horizon_seconds"`
}

// AlgorithmReporter is implemented by a [Signer] that can say which AdCP
// signature algorithms it signs with, as [RFC9421Signer] does. A custom
// Signer implements it to be advertised by [WebhookSigning].
type AlgorithmReporter interface {
	SigningAlgorithms() []string
}

// SigningAlgorithms returns the algorithm of the signer's key, or with
// [SignerConfig.Keys] those of every tenant's key that signs now (none when
// no tenant has one yet): a platform whose tenants advertise apart, or
// whose keys change algorithm, computes each tenant's capability from its
// own keys when it answers.
func (s *RFC9421Signer) SigningAlgorithms() []string {
	if s.keys != nil {
		return s.keys.algorithms()
	}
	return []string{s.key.Algorithm()}
}

// CapabilityOptions are what [WebhookSigning] cannot read from the
// sender and supervisor.
type CapabilityOptions struct {
	// LegacyHMACFallback: the seller honours buyers' legacy HMAC-SHA256
	// authentication (the supervisor sends it for any webhook whose
	// Routing.Authentication asks for it).
	LegacyHMACFallback bool
	// AllowNonDurable lets a supervisor that loses its deliveries on a
	// restart ([MemorySupervisor]) advertise a horizon, for development:
	// AdCP 3.2 requires the publisher to keep the key-to-payload binding
	// and delivery state for the whole horizon.
	AllowNonDurable bool
}

// WebhookSigning returns the webhook_signing capability block for
// webhooks sup delivers through sender, so that what a seller advertises
// cannot drift from what it does: Supported and Algorithms come from the
// sender's Signer, the horizon from sup. It returns an error (matching
// [ErrInvalidConfig]) when sup has no horizon ([NoHorizon]: a 3.2 seller
// must advertise one), when sup is not durable (unless AllowNonDurable),
// or when the sender's Signer cannot report its algorithms. A sender with
// no Signer gives Supported false: AdCP requires true of any seller that
// emits state-changing webhooks, which must then be signed.
func WebhookSigning(sup Supervisor, sender *HTTPSender, opts CapabilityOptions) (WebhookSigningCapability, error) {
	if sup == nil || sender == nil {
		return WebhookSigningCapability{}, fmt.Errorf("%w: WebhookSigning needs the supervisor and the sender", ErrInvalidConfig)
	}
	c := WebhookSigningCapability{LegacyHMACFallback: opts.LegacyHMACFallback}
	h := sup.DeliveryRetryHorizon()
	if h <= 0 {
		return c, badConfig("Retry.Horizon", "is NoHorizon; an AdCP 3.2 seller must advertise a retry horizon of 24h to 168h")
	}
	if !sup.DeliveryStateIsDurable() && !opts.AllowNonDurable {
		return c, badConfig("CapabilityOptions.AllowNonDurable", "is false, and the supervisor loses its deliveries on a restart: it cannot keep a key's binding for the %v it would advertise. Use the PostgresSupervisor, or set AllowNonDurable for development", h)
	}
	c.DeliveryRetryHorizonSeconds = int64(h.Seconds())
	if sender.signer == nil {
		return c, nil
	}
	ar, ok := sender.signer.(AlgorithmReporter)
	if !ok {
		return c, badConfig("HTTPSenderConfig.Signer", "is a %T, which does not report its algorithms: implement AlgorithmReporter", sender.signer)
	}
	algs := slices.Compact(slices.Sorted(slices.Values(ar.SigningAlgorithms())))
	for _, a := range algs {
		if a != receive.AlgEd25519 && a != receive.AlgECDSAP256 {
			return c, badConfig("HTTPSenderConfig.Signer", "signs with %q; the AdCP webhook profile allows only %s and %s", a, receive.AlgEd25519, receive.AlgECDSAP256)
		}
	}
	if len(algs) == 0 {
		return c, badConfig("HTTPSenderConfig.Signer", "reports no algorithm")
	}
	c.Supported, c.Profile, c.Algorithms = true, receive.SignatureTag, algs
	return c, nil
}
