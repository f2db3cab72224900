package webhook

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/adcpkit/webhook/internal/ident"
	"github.com/adcpkit/webhook/internal/strictjson"
)

// ErrChallengeFailed is returned by [HTTPSender.Challenge] when the
// subscriber's endpoint did not prove control: no 2xx, or a body that does
// not echo the challenge. The subscriber must not be activated.
var ErrChallengeFailed = errors.New("webhook: activation challenge failed")

// ActivationChallenge is what a seller proves an account- or agent-level
// webhook subscriber controls before its first fire (AdCP 3.2:
// webhook-challenge.json, agent-webhook-challenge.json): the subscriber's
// registration, as the seller normalised it.
type ActivationChallenge struct {
	// URL is the subscriber's notification_configs[].url. Required; https
	// unless AllowInsecureHTTP.
	URL string
	// AccountID is the account whose notification_configs[] entry is
	// challenged. Empty for an agent-level subscriber
	// (sync_agent_notification_configs): the challenge then carries
	// scope "agent".
	AccountID string
	// SubscriberID is the buyer's subscriber_id. Required;
	// ^[A-Za-z0-9_.:-]{1,64}$.
	SubscriberID string
	// SellerAgentURL is the seller agent URL whose key signs the challenge
	// and the webhooks that follow. Required.
	SellerAgentURL string
	// Tenant is the seller's tenant whose key signs the challenge, as
	// Routing.Tenant names it for the webhooks that follow; "" for the
	// default key.
	Tenant string
	// DeliveryAuth is the legacy authentication the subscriber registered
	// for its webhooks, or nil for RFC 9421 signatures. Only its scheme and
	// the SHA-256 of its credentials are sent.
	DeliveryAuth *Authentication
	// EventTypes are the notification types the subscriber asked for.
	// Required.
	EventTypes []string
	// AllowInsecureHTTP accepts an http:// URL, for local development.
	AllowInsecureHTTP bool
}

// Challenge sends an activation challenge to a subscriber's endpoint and
// checks the answer, as AdCP 3.2 requires before a new or changed
// account- or agent-level subscriber becomes active. The POST is signed
// with the sender's RFC 9421 signer even when the subscriber's deliveries
// will use legacy authentication, and goes through the sender's guarded
// client (its destination checks apply). It returns nil when the endpoint
// answered 2xx with a JSON body echoing the challenge in "challenge" or
// "token"; otherwise an error matching [ErrChallengeFailed] (or a
// [*ValidationError] for bad input, or the transport error). The challenge
// value is fresh from crypto/rand on every call.
func (s *HTTPSender) Challenge(ctx context.Context, c ActivationChallenge) error {
	body, challenge, err := buildChallenge(c, s.dev)
	if err != nil {
		return err
	}
	if s.signer == nil {
		return badConfig("HTTPSenderConfig.Signer", "is nil: an activation challenge must be signed with the seller's RFC 9421 key, even for subscribers that will use legacy authentication")
	}
	if err := s.CheckTenant(c.Tenant); err != nil {
		return &ValidationError{Field: "Tenant", sentinel: ErrSigningKeyMissing, Reason: "cannot be signed for (" + strings.TrimPrefix(err.Error(), "webhook: ") + ")"}
	}
	resp, err := s.Send(ctx, &Request{URL: c.URL, Body: body, Tenant: c.Tenant}) // no Authentication: signed
	if err != nil {
		return err
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("%w: the endpoint answered %s", ErrChallengeFailed, describeResponse(resp))
	}
	// webhook-challenge-response.json: an object with exactly one member,
	// "challenge" or "token" (names compared exactly: an endpoint that
	// reflects the request, whose body has a "challenge" among its other
	// members, proves nothing).
	var answer map[string]json.RawMessage
	if err := json.Unmarshal(resp.Body, &answer); err != nil || len(answer) != 1 || strictjson.Check(resp.Body) != nil {
		return fmt.Errorf("%w: the answer is not a JSON object whose one member is challenge or token", ErrChallengeFailed)
	}
	raw, ok := answer["challenge"]
	if !ok {
		raw, ok = answer["token"]
	}
	var echoed string
	if !ok || json.Unmarshal(raw, &echoed) != nil || echoed != challenge {
		return fmt.Errorf("%w: the answer does not echo the challenge", ErrChallengeFailed)
	}
	return nil
}

// buildChallenge validates c and returns the challenge body and its fresh
// challenge value.
func buildChallenge(c ActivationChallenge, dev bool) ([]byte, string, error) {
	if err := (urlPolicy{allowHTTP: c.AllowInsecureHTTP || dev, config: "ActivationChallenge."}).checkURL("URL", c.URL); err != nil {
		return nil, "", err
	}
	if !ident.Valid(c.SubscriberID, 1, 64) {
		return nil, "", invalid("SubscriberID", "must match ^[A-Za-z0-9_.:-]{1,64}$")
	}
	if err := checkText("AccountID", c.AccountID, false, 255); err != nil {
		return nil, "", err
	}
	if err := (urlPolicy{allowHTTP: true}).checkURL("SellerAgentURL", c.SellerAgentURL); err != nil {
		return nil, "", err
	}
	if len(c.EventTypes) == 0 {
		return nil, "", invalid("EventTypes", "is empty; list the notification types the subscriber registered for")
	}
	events := slices.Clone(c.EventTypes)
	slices.Sort(events)
	if len(slices.Compact(events)) != len(c.EventTypes) {
		return nil, "", invalid("EventTypes", "lists a type twice")
	}
	for _, e := range c.EventTypes {
		if err := checkText("EventTypes", e, true, 255); err != nil {
			return nil, "", err
		}
	}
	auth := map[string]string{"mode": "rfc9421"}
	if a := c.DeliveryAuth; a != nil {
		if err := a.check(); err != nil {
			return nil, "", err
		}
		sum := sha256.Sum256([]byte(a.Credentials))
		auth = map[string]string{"mode": string(a.Scheme), "credential_fingerprint": hex.EncodeToString(sum[:])}
	}
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return nil, "", fmt.Errorf("webhook: challenge: %w", err)
	}
	challenge := base64.RawURLEncoding.EncodeToString(raw[:]) // 43 characters of the required alphabet
	doc := map[string]any{
		"type": "webhook.challenge", "challenge": challenge, "subscriber_id": c.SubscriberID,
		"seller_agent_url": c.SellerAgentURL, "delivery_auth": auth, "event_types": c.EventTypes,
	}
	if c.AccountID != "" {
		doc["account_id"] = c.AccountID
	} else {
		doc["scope"] = "agent"
	}
	body, err := marshalCompact(doc)
	return body, challenge, err
}
