package webhook_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/adcpkit/webhook"
)

// HTTPSenderConfig.Development is the one switch for local development:
// the sender dials loopback, and a supervisor given it accepts http://.
// Without it, each refusal names the switch (and the config struct with
// the finer-grained one).
func runDevelopmentSuite(t *testing.T, newSup newSupervisorFunc, config string) {
	buyer := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	t.Cleanup(buyer.Close)
	key, err := webhook.GenerateSigningKey("dev", "ed25519")
	require.NoError(t, err)
	signer, err := webhook.NewRFC9421Signer(webhook.SignerConfig{Key: key})
	require.NoError(t, err)

	t.Run("OneSwitch", func(t *testing.T) {
		t.Parallel()
		sender, err := webhook.NewHTTPSender(webhook.HTTPSenderConfig{Signer: signer, Development: true})
		require.NoError(t, err)
		e := newEnv(t, newSup, func(c *suiteConfig) { c.Sender = sender })
		require.Equal(t, 1, strings.Count(e.logs.String(), "development mode"), e.logs.String())
		e.startWorker()
		r := e.sendMCP(mcp(buyer.URL+"/hook", "t1"))
		a := e.attempts(1)[0]
		require.Equal(t, webhook.OutcomeSuccess, a.Outcome, a.Error)
		require.Equal(t, r.ID, a.DeliveryID)
	})

	t.Run("RefusalsNameTheSwitch", func(t *testing.T) {
		t.Parallel()
		sender, err := webhook.NewHTTPSender(webhook.HTTPSenderConfig{Signer: signer})
		require.NoError(t, err)
		e := newEnv(t, newSup, func(c *suiteConfig) {
			c.Sender = sender
			c.Retry.MaxAttempts = 1
		})
		require.NotContains(t, e.logs.String(), "development mode")
		_, err = e.sup.SendMCP(context.Background(), mcp(buyer.URL+"/hook", "t1"))
		var ve *webhook.ValidationError
		require.ErrorAs(t, err, &ve)
		require.Contains(t, ve.Reason, "HTTPSenderConfig.Development")
		require.Contains(t, ve.Reason, config+".AllowInsecureHTTP")

		// https to loopback: accepted, then refused at dial time, with a
		// warning that names the switch.
		e.startWorker()
		e.sendMCP(mcp("https"+strings.TrimPrefix(buyer.URL, "http")+"/hook", "t2"))
		a := e.attempts(1)[0]
		require.Equal(t, webhook.OutcomeFailure, a.Outcome)
		require.Contains(t, a.Error, "HTTPSenderConfig.Development")
		require.Contains(t, e.logs.String(), "for local development set HTTPSenderConfig.Development")
		require.True(t, errors.Is(err, webhook.ErrInvalidWebhook))
	})
}

func TestMemoryDevelopment(t *testing.T) {
	t.Parallel()
	runDevelopmentSuite(t, newMemory, "MemoryConfig")
}

func TestPostgresDevelopment(t *testing.T) {
	t.Parallel()
	runDevelopmentSuite(t, newPostgres, "PostgresConfig")
}
