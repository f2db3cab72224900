// Package recvhook lets this module's test helpers (webhooktest) build a
// receive.Handler in ways its public API refuses: a receiver that accepts
// unsigned webhooks, or a verifier that names no seller agent. Package
// receive sets New when it is initialised.
package recvhook

import "net/http"

// Hooks adjust one handler.
type Hooks struct {
	// Unverified accepts webhooks without authenticating them (the body
	// must still be strict JSON); their sender is Sender.
	Unverified bool
	// Sender is the sender identity of unverified webhooks, and of
	// verified ones when the Verifier names no agent.
	Sender string
	// Refused, when set, is called with every authentication error, from
	// the request's goroutine.
	Refused func(r *http.Request, err error)
}

// New builds a receive.Handler from a receive.HandlerConfig (cfg) with
// hooks. Set by package receive.
var New func(cfg any, next http.Handler, hooks Hooks) (http.Handler, error)
