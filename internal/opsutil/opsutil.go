// Package opsutil holds what the operator tools (cmd/webhookctl and
// webhookui) share beyond the Inspector.
package opsutil

import (
	"context"

	"github.com/adcpkit/webhook"
)

// ResolveBreaker finds the breaker key names among the listed breakers:
// the one whose exact key it is, else the one whose printed form
// ([webhook.LoggableURL]: no query, token-shaped segments hidden) it is,
// so that an operator can name a breaker by what the tools show. It
// returns key itself and 0 when no listed breaker matches (one that is
// closed and clean, or never seen), and n > 1 when the printed form names
// several.
func ResolveBreaker(ctx context.Context, in webhook.Inspector, key string) (resolved string, n int, err error) {
	var found []string
	for p := (webhook.Page{Limit: webhook.PageLimitMax}); ; {
		l, err := in.Breakers(ctx, p)
		if err != nil {
			return "", 0, err
		}
		for _, b := range l.Breakers {
			if b.Key == key {
				return key, 1, nil
			}
			if webhook.LoggableURL(b.Key) == key {
				found = append(found, b.Key)
			}
		}
		if l.Next == "" {
			break
		}
		p.After = l.Next
	}
	if len(found) == 1 {
		return found[0], 1, nil
	}
	return key, len(found), nil
}
