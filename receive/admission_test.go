package receive_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/adcpkit/webhook/receive"
)

// alarms returns the clauses of the admission alarms logged, in order.
func alarms(t *testing.T, logs *bytes.Buffer) []string {
	t.Helper()
	var out []string
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		if line == "" {
			continue
		}
		var rec struct {
			Msg    string `json:"msg"`
			Clause string `json:"clause"`
		}
		require.NoError(t, json.Unmarshal([]byte(line), &rec))
		if strings.Contains(rec.Msg, "admission pressure") {
			out = append(out, rec.Clause)
		}
	}
	return out
}

func monitor(t *testing.T, cfg receive.AdmissionConfig) (*receive.AdmissionMonitor, *bytes.Buffer) {
	t.Helper()
	logs := &bytes.Buffer{}
	cfg.Logger = slog.New(slog.NewJSONHandler(logs, nil))
	m, err := receive.NewAdmissionMonitor(cfg)
	require.NoError(t, err)
	return m, logs
}

// windows feeds n windows of 5 minutes from start, each admitting
// perWindow new keyids, and returns the time after them.
func windows(m *receive.AdmissionMonitor, start time.Time, n, perWindow int, prefix string) time.Time {
	ctx := context.Background()
	for w := range n {
		at := start.Add(time.Duration(w) * 5 * time.Minute)
		for i := range perWindow {
			m.Observe(ctx, fmt.Sprintf("%s-%d-%d", prefix, w, i), at)
		}
	}
	return start.Add(time.Duration(n) * 5 * time.Minute)
}

var a0 = time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)

func TestAdmissionClauseD(t *testing.T) {
	t.Parallel()
	m, logs := monitor(t, receive.AdmissionConfig{ShortRatio: 100, MediumRatio: 100, LongRatio: 100, Floor: 5, Fraction: 0.1})
	ctx := context.Background()
	for i := range 5 {
		m.Observe(ctx, fmt.Sprint("k", i), a0)
	}
	require.Empty(t, alarms(t, logs), "at the floor")
	m.Observe(ctx, "k0", a0.Add(time.Second))
	require.Empty(t, alarms(t, logs), "a known keyid is not an admission")
	m.Observe(ctx, "k5", a0.Add(time.Second))
	require.Equal(t, []string{"d"}, alarms(t, logs))
	m.Observe(ctx, "k6", a0.Add(2*time.Second))
	require.Equal(t, []string{"d"}, alarms(t, logs), "once per window")
	next := windows(m, a0.Add(5*time.Minute), 1, 6, "w")
	require.Equal(t, []string{"d", "d"}, alarms(t, logs), "and again in the next window")
	_ = next
}

func TestAdmissionClauseA(t *testing.T) {
	t.Parallel()
	// A day at 10 new keyids per window: the moving average is 10. (The
	// floor, 10, keeps the first windows, with no history yet, quiet.)
	m, logs := monitor(t, receive.AdmissionConfig{ShortRatio: 3, MediumRatio: 1000, LongRatio: 1000, Floor: 10, Fraction: 1})
	at := windows(m, a0, 288, 10, "day")
	require.Empty(t, alarms(t, logs))
	windows(m, at, 1, 30, "spike")
	require.Empty(t, alarms(t, logs), "30 is not more than 3 × 10")
	windows(m, at.Add(5*time.Minute), 1, 31, "spike2")
	require.Equal(t, []string{"a"}, alarms(t, logs), "a sudden spike")
}

func TestAdmissionClausesBAndC(t *testing.T) {
	t.Parallel()
	// Thirty days at one new keyid per window: P95 and P99 are 1.
	m, logs := monitor(t, receive.AdmissionConfig{ShortRatio: 1000, MediumRatio: 2, LongRatio: 1000, Floor: 1, Fraction: 1})
	at := windows(m, a0, 30*288, 1, "base")
	windows(m, at, 1, 3, "ramp")
	require.Equal(t, []string{"b"}, alarms(t, logs), "3 > 2 × the 30-day P95")

	m, logs = monitor(t, receive.AdmissionConfig{ShortRatio: 1000, MediumRatio: 1000, LongRatio: 1.5, Floor: 1, Fraction: 1})
	at = windows(m, a0, 30*288, 1, "base")
	windows(m, at, 1, 2, "ramp")
	require.Equal(t, []string{"c"}, alarms(t, logs), "2 > 1.5 × the 90-day P99")
}

func TestAdmissionThresholdsAndTuning(t *testing.T) {
	t.Parallel()
	m, logs := monitor(t, receive.AdmissionConfig{ShortRatio: 4})
	th := m.Thresholds()
	require.Equal(t, 4.0, th.ShortRatio)
	require.ElementsMatch(t, []string{"MediumRatio", "LongRatio", "Floor", "Fraction"}, th.Untuned)
	for _, c := range []struct{ got, start float64 }{{th.MediumRatio, 2}, {th.LongRatio, 1.5}, {th.Floor, 20}, {th.Fraction, 0.1}} {
		require.GreaterOrEqual(t, c.got, c.start/2)
		require.LessOrEqual(t, c.got, c.start*2)
	}
	other, _ := monitor(t, receive.AdmissionConfig{})
	require.NotEqual(t, th.Floor, other.Thresholds().Floor, "starting values are jittered per monitor")

	ctx := context.Background()
	m.Observe(ctx, "k1", a0)
	m.Observe(ctx, "k1", a0.Add(29*24*time.Hour))
	require.NotContains(t, logs.String(), "threshold_tuning_overdue")
	m.Observe(ctx, "k1", a0.Add(31*24*time.Hour))
	require.Contains(t, logs.String(), "threshold_tuning_overdue")
	n := strings.Count(logs.String(), "threshold_tuning_overdue")
	m.Observe(ctx, "k1", a0.Add(31*24*time.Hour+time.Hour))
	require.Equal(t, n, strings.Count(logs.String(), "threshold_tuning_overdue"), "daily, not per webhook")

	tuned, logs2 := monitor(t, receive.AdmissionConfig{ShortRatio: 3, MediumRatio: 2, LongRatio: 1.5, Floor: 20, Fraction: 0.1})
	tuned.Observe(ctx, "k1", a0)
	tuned.Observe(ctx, "k1", a0.Add(40*24*time.Hour))
	require.NotContains(t, logs2.String(), "threshold_tuning_overdue", "set thresholds are the operator's, whatever their value")

	_, err := receive.NewAdmissionMonitor(receive.AdmissionConfig{Floor: -1})
	require.ErrorContains(t, err, "AdmissionConfig.Floor")
}

func TestVerifiersShareAnAdmissionMonitor(t *testing.T) {
	t.Parallel()
	m, logs := monitor(t, receive.AdmissionConfig{ShortRatio: 100, MediumRatio: 100, LongRatio: 100, Floor: 2, Fraction: 1e-9})
	c := &clock{now: time.Now()}
	for i := range 3 { // three sellers, one new key each
		k := newSellerKey(t, "k")
		v, err := receive.NewVerifier(receive.VerifierConfig{Agent: fmt.Sprintf("https://seller%d.example/mcp", i),
			Keys: []receive.VerifyingKey{k.key.VerifyingKey()}, Admissions: m, Now: c.Now})
		require.NoError(t, err)
		_, err = verifyWith(t, v, k, c)
		require.NoError(t, err)
		_, err = verifyWith(t, v, k, c)
		require.NoError(t, err)
	}
	require.Equal(t, []string{"d"}, alarms(t, logs), "three sellers' kids, the same name: three keyids")
}
