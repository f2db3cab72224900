package webhook

import (
	"context"
	"log/slog"
	"time"

	"github.com/adcpkit/webhook/internal/engine"
)

// Maintenance: purging finished deliveries after Retention.

// purgeLoop runs Purge when the worker starts and then every minute.
func (s *PostgresSupervisor) purgeLoop(ctx context.Context) {
	if s.retention < 0 {
		return
	}
	for {
		if _, err := s.Purge(ctx, s.k.clock.Now().Add(-s.retention)); err != nil && ctx.Err() == nil {
			s.k.logger.LogAttrs(ctx, slog.LevelWarn, "webhook: purging finished deliveries failed", slog.String("error", err.Error()))
		}
		if !engine.Sleep(ctx, purgeEvery) {
			return
		}
	}
}

const purgeEvery = time.Minute

// Purge deletes delivered and failed deliveries (with their attempt
// rows) that finished before before, and acceptance refusals as old, in
// batches of purgeBatch rows, and returns how many deliveries it deleted.
// Workers purge what is older than Retention on their own. See
// [Inspector].
func (s *PostgresSupervisor) Purge(ctx context.Context, before time.Time) (int64, error) {
	var total int64
	for {
		tag, err := exec(ctx, s.db, s.q.purge, purgeParams{Cutoff: before, Limit: purgeBatch})
		if err != nil {
			return total, dbError("purge", err)
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < purgeBatch {
			break
		}
	}
	for {
		tag, err := exec(ctx, s.db, s.q.purgeRefusals, purgeParams{Cutoff: before, Limit: purgeBatch})
		if err != nil {
			return total, dbError("purge", err)
		}
		if tag.RowsAffected() < purgeBatch {
			return total, nil
		}
	}
}

// purgeBatch is how many rows one purge statement deletes.
const purgeBatch = 500
