package receive

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestAnswerChallengeChecksEveryBinding(t *testing.T) {
	t.Parallel()
	const secret = "Zq8-uR2_kL5.mN7~pX4+wV1/cB9=jH3dF6"
	sum := sha256.Sum256([]byte(secret))
	challenge := "c2VjcmV0LWNoYWxsZW5nZS12YWx1ZS0xMjM0NTY3ODkw"
	doc := func(mutate func(map[string]any)) []byte {
		m := map[string]any{"type": "webhook.challenge", "challenge": challenge, "account_id": "acct_1", "subscriber_id": "sub_42",
			"seller_agent_url": "https://seller.example/mcp", "event_types": []string{"a.b", "c.d"},
			"delivery_auth": map[string]any{"mode": "HMAC-SHA256", "credential_fingerprint": hex.EncodeToString(sum[:])}}
		if mutate != nil {
			mutate(m)
		}
		b, err := json.Marshal(m)
		require.NoError(t, err)
		return b
	}
	reg := Registration{AccountID: "acct_1", SubscriberID: "sub_42", SellerAgentURL: "https://seller.example/mcp",
		Scheme: "HMAC-SHA256", Credentials: secret, EventTypes: []string{"c.d", "a.b"}}
	require.True(t, IsChallenge(doc(nil)))
	require.False(t, IsChallenge([]byte(`{"idempotency_key":"k","status":"completed"}`)))
	answer, err := AnswerChallenge(doc(nil), reg)
	require.NoError(t, err)
	require.JSONEq(t, `{"challenge":"`+challenge+`"}`, string(answer))

	for field, mutate := range map[string]func(map[string]any){
		"account_id":       func(m map[string]any) { m["account_id"] = "acct_2" },
		"scope":            func(m map[string]any) { m["scope"] = "agent" },
		"subscriber_id":    func(m map[string]any) { m["subscriber_id"] = "sub_43" },
		"seller_agent_url": func(m map[string]any) { m["seller_agent_url"] = "https://evil.example/mcp" },
		"mode":             func(m map[string]any) { m["delivery_auth"] = map[string]any{"mode": "rfc9421"} },
		"fingerprint": func(m map[string]any) {
			m["delivery_auth"] = map[string]any{"mode": "HMAC-SHA256", "credential_fingerprint": hex.EncodeToString(make([]byte, 32))}
		},
		"event_types":     func(m map[string]any) { m["event_types"] = []string{"a.b"} },
		"duplicate event": func(m map[string]any) { m["event_types"] = []string{"a.b", "c.d", "c.d"} },
		"short challenge": func(m map[string]any) { m["challenge"] = "short" },
		"bad characters":  func(m map[string]any) { m["challenge"] = challenge + "/+" },
		"type":            func(m map[string]any) { m["type"] = "webhook.notification" },
	} {
		_, err := AnswerChallenge(doc(mutate), reg)
		require.ErrorIs(t, err, ErrChallengeMismatch, field)
		require.NotContains(t, err.Error(), "evil", "no value is quoted")
	}

	agent := Registration{SubscriberID: "caps", SellerAgentURL: "https://seller.example/mcp", EventTypes: []string{"capabilities.changed"}}
	body := doc(func(m map[string]any) {
		delete(m, "account_id")
		m["scope"], m["subscriber_id"], m["event_types"] = "agent", "caps", []string{"capabilities.changed"}
		m["delivery_auth"] = map[string]any{"mode": "rfc9421"}
	})
	_, err = AnswerChallenge(body, agent)
	require.NoError(t, err)
	_, err = AnswerChallenge(doc(nil), agent)
	require.ErrorIs(t, err, ErrChallengeMismatch, "an account-level challenge for an agent-level registration")
}
