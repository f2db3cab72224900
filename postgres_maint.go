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
		if _, err := s.Purge(ctx); err != nil && ctx.Err() == nil {
			s.k.logger.LogAttrs(ctx, slog.LevelWarn, "webhook: purging finished deliveries failed", slog.String("error", err.Error()))
		}
		if !engine.Sleep(ctx, purgeEvery) {
			return
		}
	}
}

const purgeEvery = time.Minute

// Purge deletes delivered and failed deliveries (with their attempt rows)
// that finished more than Retention ago, and acceptance refusals as old, in
// batches of purgeBatch rows, and returns how many deliveries it deleted.
// Workers call it on their own; it is exported for operators.
func (s *PostgresSupervisor) Purge(ctx context.Context) (int64, error) {
	if s.retention < 0 {
		return 0, nil
	}
	cutoff := s.k.clock.Now().Add(-s.retention)
	var total int64
	for {
		tag, err := exec(ctx, s.db, s.q.purge, purgeParams{Cutoff: cutoff, Limit: purgeBatch})
		if err != nil {
			return total, dbError("purge", err)
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < purgeBatch {
			break
		}
	}
	for {
		tag, err := exec(ctx, s.db, s.q.purgeRefusals, purgeParams{Cutoff: cutoff, Limit: purgeBatch})
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
