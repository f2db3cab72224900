package receive

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/adcpkit/webhook/internal/ident"
)

// ErrChallengeMismatch is returned by [AnswerChallenge] when an activation
// challenge does not match what the buyer registered: the buyer must not
// echo it.
var ErrChallengeMismatch = errors.New("receive: activation challenge does not match the registration")

// Registration is what a buyer registered for one account- or
// agent-level webhook subscriber (sync_accounts notification_configs[],
// or sync_agent_notification_configs), which an activation challenge
// must match field for field.
type Registration struct {
	// AccountID is the seller account of an account-level subscriber;
	// empty for an agent-level one (the challenge's scope is then
	// "agent").
	AccountID string
	// SubscriberID is the subscriber_id the buyer chose.
	SubscriberID string
	// SellerAgentURL is the seller agent the buyer registered with; the
	// challenge's signature must verify under that agent's key.
	SellerAgentURL string
	// Scheme and Credentials are the legacy authentication the buyer
	// registered ("Bearer" or "HMAC-SHA256"), or empty for RFC 9421
	// webhooks.
	Scheme      string
	Credentials string
	// EventTypes are the notification types registered.
	EventTypes []string
}

// IsChallenge reports whether a webhook body is an activation challenge
// (its type is "webhook.challenge") rather than a notification.
func IsChallenge(body []byte) bool { return isChallenge(members(body)) }

// isChallenge reads the exact "type" member of a body's members.
func isChallenge(doc map[string]json.RawMessage) bool {
	var typ string
	return json.Unmarshal(doc["type"], &typ) == nil && typ == "webhook.challenge"
}

// AnswerChallenge checks an activation challenge body against the buyer's
// registration and returns the answer to send with status 200
// ({"challenge":"..."}), as AdCP 3.2's webhook-challenge-response.json
// says. Call it only after the request's RFC 9421 signature verified
// ([Verifier.VerifyRequest]: it binds the URL and the expiry) under the
// registered seller agent's key. Any difference from the registration
// (account, subscriber, seller agent URL, delivery mode, the fingerprint of
// the legacy credentials, the set of event types) returns an error
// matching [ErrChallengeMismatch]: the buyer must not echo the challenge
// then. The errors name the field, never a value.
func AnswerChallenge(body []byte, reg Registration) ([]byte, error) {
	var c struct {
		Type           string   `json:"type"`
		Scope          string   `json:"scope"`
		Challenge      string   `json:"challenge"`
		AccountID      string   `json:"account_id"`
		SubscriberID   string   `json:"subscriber_id"`
		SellerAgentURL string   `json:"seller_agent_url"`
		EventTypes     []string `json:"event_types"`
		DeliveryAuth   struct {
			Mode                  string `json:"mode"`
			CredentialFingerprint string `json:"credential_fingerprint"`
		} `json:"delivery_auth"`
	}
	if err := json.Unmarshal(body, &c); err != nil || c.Type != "webhook.challenge" {
		return nil, fmt.Errorf("%w: not an activation challenge", ErrChallengeMismatch)
	}
	if !ident.Valid(c.Challenge, 32, 255) {
		return nil, fmt.Errorf("%w: challenge is not 32 to 255 characters of [A-Za-z0-9_.:-]", ErrChallengeMismatch)
	}
	mismatch := func(field string) error { return fmt.Errorf("%w: %s", ErrChallengeMismatch, field) }
	switch {
	case reg.AccountID == "" && (c.Scope != "agent" || c.AccountID != ""):
		return nil, mismatch("scope: an agent-level registration gets scope \"agent\" and no account_id")
	case reg.AccountID != "" && (c.Scope != "" || c.AccountID != reg.AccountID):
		return nil, mismatch("account_id")
	case c.SubscriberID != reg.SubscriberID:
		return nil, mismatch("subscriber_id")
	case c.SellerAgentURL != reg.SellerAgentURL:
		return nil, mismatch("seller_agent_url")
	}
	wantMode := reg.Scheme
	if wantMode == "" {
		wantMode = "rfc9421"
	}
	if c.DeliveryAuth.Mode != wantMode {
		return nil, mismatch("delivery_auth.mode")
	}
	if reg.Scheme != "" {
		sum := sha256.Sum256([]byte(reg.Credentials))
		if c.DeliveryAuth.CredentialFingerprint != hex.EncodeToString(sum[:]) {
			return nil, mismatch("delivery_auth.credential_fingerprint")
		}
	} else if c.DeliveryAuth.CredentialFingerprint != "" {
		return nil, mismatch("delivery_auth.credential_fingerprint: none for rfc9421")
	}
	got, want := slices.Clone(c.EventTypes), slices.Clone(reg.EventTypes)
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) || len(slices.Compact(got)) != len(c.EventTypes) {
		return nil, mismatch("event_types")
	}
	return json.Marshal(struct {
		Challenge string `json:"challenge"`
	}{c.Challenge})
}
