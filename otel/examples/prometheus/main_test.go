package main

import (
	"bytes"
	"context"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// value sums the samples of the series whose name is name and whose labels
// include each of labels.
func value(t *testing.T, text, name string, labels ...string) float64 {
	t.Helper()
	re := regexp.MustCompile(`^` + regexp.QuoteMeta(name) + `(\{[^}]*\})? (\S+)$`)
	sum, found := 0.0, false
	for _, line := range strings.Split(text, "\n") {
		m := re.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		ok := true
		for _, l := range labels {
			ok = ok && strings.Contains(m[1], l)
		}
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(m[2], 64)
		require.NoError(t, err)
		sum, found = sum+v, true
	}
	require.True(t, found, "no %s%v in:\n%s", name, labels, text)
	return sum
}

// The example's scrape, over real HTTP through the OTel Prometheus
// exporter, counts the deliveries it made.
func TestScrapeCountsTheDeliveries(t *testing.T) {
	var out bytes.Buffer
	require.NoError(t, run(context.Background(), &out))
	text := out.String()
	require.Equal(t, 6.0, value(t, text, "webhook_deliveries_accepted_total"))
	require.Equal(t, 4.0, value(t, text, "webhook_deliveries_finished_total", `webhook_delivery_state="delivered"`))
	require.Equal(t, 2.0, value(t, text, "webhook_deliveries_finished_total", `webhook_delivery_state="failed"`, `webhook_delivery_reason="rejected"`))
	require.Equal(t, 6.0, value(t, text, "webhook_attempts_total"))
	require.Equal(t, 2.0, value(t, text, "http_client_request_duration_seconds_count", `http_response_status_code="400"`))
	require.Equal(t, 4.0, value(t, text, "webhook_queue_deliveries", `webhook_delivery_state="delivered"`))
	require.Equal(t, 0.0, value(t, text, "webhook_queue_due"))
}
