package receive_test

import (
	"testing"

	"github.com/adcpkit/webhook/internal/dedupsuite"
	"github.com/adcpkit/webhook/receive"
)

func TestMemoryDedupStore(t *testing.T) {
	t.Parallel()
	dedupsuite.Run(t, func(_ *testing.T, cfg dedupsuite.Config) (receive.DedupStore, receive.DedupStore) {
		return &receive.MemoryDedupStore{Retention: cfg.Retention, PerSenderCap: cfg.PerSenderCap}, nil
	})
}
