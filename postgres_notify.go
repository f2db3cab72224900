package webhook

import (
	"context"
	"log/slog"

	"github.com/adcpkit/webhook/internal/engine"
	"github.com/jackc/pgx/v5"
)

// Wake-ups: NOTIFY after an enqueue commits, and the LISTEN connection that
// wakes the claimer.

// listen wakes the claimer on NOTIFY from a dedicated connection, and
// reconnects with backoff when it drops; meanwhile the claimer polls.
func (s *PostgresSupervisor) listen(ctx context.Context, wake func()) {
	var backoff engine.Backoff
	for ctx.Err() == nil {
		conn, err := pgx.ConnectConfig(ctx, s.listenConfig)
		if err == nil {
			_, err = conn.Exec(ctx, "LISTEN "+pgx.Identifier{s.q.channel}.Sanitize())
			if err == nil {
				backoff.Reset()
				wake() // anything enqueued while not listening
				for err == nil {
					_, err = conn.WaitForNotification(ctx)
					if err == nil {
						wake()
					}
				}
			}
			conn.Close(context.WithoutCancel(ctx)) //nolint:errcheck // closing a broken connection
		}
		if ctx.Err() != nil {
			return
		}
		s.k.logger.LogAttrs(ctx, slog.LevelWarn, "webhook: LISTEN connection failed; polling until it is back",
			slog.String("error", dbError("listen", err).Error()), slog.Duration("retry_in", backoff.Peek()))
		engine.Sleep(ctx, backoff.Next())
	}
}

// wakeWorkers sends NOTIFY to the workers after a delivery committed. It
// does not wait: one goroutine sends, and enqueues that commit while it
// does share the next notification, which starts after they committed.
func (s *PostgresSupervisor) wakeWorkers() {
	n := &s.notifier
	n.mu.Lock()
	if n.running {
		n.again = true
		n.mu.Unlock()
		return
	}
	n.running = true
	n.mu.Unlock()
	go func() {
		for {
			ctx, cancel := context.WithTimeout(context.Background(), statementTimeout)
			if _, err := exec(ctx, s.db, s.q.notify, channelParams{Channel: s.q.channel}); err != nil {
				// Workers poll every PollInterval: a lost wake-up delays,
				// it does not lose.
				s.k.logger.LogAttrs(ctx, slog.LevelDebug, "webhook: NOTIFY failed", slog.String("error", dbError("notify", err).Error()))
			}
			cancel()
			n.mu.Lock()
			if !n.again {
				n.running = false
				n.mu.Unlock()
				return
			}
			n.again = false
			n.mu.Unlock()
		}
	}()
}
