// Package opsutil holds what the operator tools (cmd/webhookctl and
// webhookui) share beyond the Inspector.
package opsutil

import (
	"context"

	"github.com/adcpkit/webhook"
)

// MaxBreakers bounds how many breakers the tools read to list or resolve:
// breakers that are open, half-open or counting failures are few.
const MaxBreakers = 10 * webhook.PageLimitMax

// AllBreakers lists the breakers that are open, half-open or counting
// failures, in key order, at most MaxBreakers of them, and whether there
// were more. The tools page through them themselves, so that a cursor
// (which is a key, query and all) is never shown.
func AllBreakers(ctx context.Context, in webhook.Inspector) ([]webhook.BreakerInfo, bool, error) {
	var out []webhook.BreakerInfo
	for p := (webhook.Page{Limit: webhook.PageLimitMax}); ; {
		l, err := in.Breakers(ctx, p)
		if err != nil {
			return nil, false, err
		}
		out = append(out, l.Breakers...)
		if l.Next == "" {
			return out, false, nil
		}
		if len(out) >= MaxBreakers {
			return out[:MaxBreakers], true, nil
		}
		p.After = l.Next
	}
}

// MatchBreakers returns the keys of the resettable breakers that key names:
// exactly, or as the tools print them ([webhook.LoggableURL]: no query,
// token-shaped segments hidden). Several keys can print alike; the caller
// decides what to do then.
// truncated reports that there were more breakers than MaxBreakers to
// look through.
func MatchBreakers(ctx context.Context, in webhook.Inspector, key string) (keys []string, exact, truncated bool, err error) {
	all, truncated, err := AllBreakers(ctx, in)
	if err != nil {
		return nil, false, false, err
	}
	for _, b := range all {
		switch {
		case !b.Resettable():
		case b.Key == key:
			exact = true
			keys = append(keys, b.Key)
		case webhook.LoggableURL(b.Key) == key:
			keys = append(keys, b.Key)
		}
	}
	return keys, exact, truncated, nil
}
