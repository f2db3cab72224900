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

	"github.com/adcpkit/webhook/internal/fakeclock"
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
	c := fakeclock.New(time.Now())
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

// pattern feeds n windows from start, window w admitting count(w) new
// keyids, and returns the time after them.
func pattern(m *receive.AdmissionMonitor, start time.Time, n int, count func(w int) int) time.Time {
	ctx := context.Background()
	for w := range n {
		at := start.Add(time.Duration(w) * 5 * time.Minute)
		for i := range count(w) {
			m.Observe(ctx, fmt.Sprintf("p-%d-%d", w, i), at)
		}
	}
	return start.Add(time.Duration(n) * 5 * time.Minute)
}

// The baselines are percentiles, not means: a history of rare bursts sets
// the bar at the burst, not at its average.
func TestAdmissionPercentiles(t *testing.T) {
	t.Parallel()
	// One window in 16 admits 10 (6%): the 30-day P95 is 10, the mean 0.6.
	m, logs := monitor(t, receive.AdmissionConfig{ShortRatio: 1000, MediumRatio: 2, LongRatio: 1000, Floor: 1, Fraction: 1})
	at := pattern(m, a0, 30*288, func(w int) int { return 10 * btoi(w%16 == 0) })
	logs.Reset() // the first bursts, against no history yet, alarm
	windows(m, at, 1, 20, "quiet")
	require.Empty(t, alarms(t, logs), "20 is 2 × P95")
	windows(m, at.Add(5*time.Minute), 1, 21, "loud")
	require.Equal(t, []string{"b"}, alarms(t, logs))

	// One window in 66 admits 10 (1.5%): the P99 is 10, the P95 0.
	m, logs = monitor(t, receive.AdmissionConfig{ShortRatio: 1000, MediumRatio: 1000, LongRatio: 1.5, Floor: 1, Fraction: 1})
	at = pattern(m, a0, 30*288, func(w int) int { return 10 * btoi(w%66 == 0) })
	logs.Reset()
	windows(m, at, 1, 15, "quiet")
	require.Empty(t, alarms(t, logs), "15 is 1.5 × P99")
	windows(m, at.Add(5*time.Minute), 1, 16, "loud")
	require.Equal(t, []string{"c"}, alarms(t, logs))
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// Found by review: a restarted process counted every established keyid as
// new, forgot its baselines and redrew its jitter; State carries them over.
func TestAdmissionStateSurvivesARestart(t *testing.T) {
	t.Parallel()
	cfg := receive.AdmissionConfig{ShortRatio: 100, MediumRatio: 100, LongRatio: 100, Floor: 20}
	first, logs := monitor(t, cfg)
	at := pattern(first, a0, 5, func(int) int { return 9 }) // 45 sellers' keyids, 9 a window
	require.Empty(t, alarms(t, logs))
	state, err := first.State()
	require.NoError(t, err)

	cfg.State = state
	restored, logs := monitor(t, cfg)
	require.Equal(t, first.Thresholds(), restored.Thresholds(), "the drawn Fraction is kept")
	require.Equal(t, []string{"Fraction"}, restored.Thresholds().Untuned)
	ctx := context.Background() // the same keyids, in one window after the restart
	for w := range 5 {
		for i := range 9 {
			restored.Observe(ctx, fmt.Sprintf("p-%d-%d", w, i), at.Add(time.Minute))
		}
	}
	require.Empty(t, alarms(t, logs), "known keyids are not admissions")

	cfg.State = nil
	fresh, logs := monitor(t, cfg)
	for w := range 5 {
		for i := range 9 {
			fresh.Observe(ctx, fmt.Sprintf("p-%d-%d", w, i), at.Add(time.Minute))
		}
	}
	require.Equal(t, []string{"d"}, alarms(t, logs), "without the state, 45 known sellers look like an attack")

	require.NotContains(t, logs.String(), "threshold_tuning_overdue")
	restored2, logs := monitor(t, receive.AdmissionConfig{State: state})
	restored2.Observe(ctx, "p-0-0", a0.Add(31*24*time.Hour))
	require.Contains(t, logs.String(), "threshold_tuning_overdue", "30 days from the first admission before the restart")
	_, err = receive.NewAdmissionMonitor(receive.AdmissionConfig{State: state, Window: time.Minute})
	require.ErrorContains(t, err, "AdmissionConfig.State")
	_, err = receive.NewAdmissionMonitor(receive.AdmissionConfig{State: []byte("{")})
	require.ErrorContains(t, err, "AdmissionConfig.State")
}

// Found by the second review: a state saved by a pod whose clock ran an hour ahead. After the
// restore, 12 windows of 5 new keyids each (under every threshold) are
// counted as one window of 60 until the wall clock catches up.
func TestAdmissionRestoredFutureWindow(t *testing.T) {
	t.Parallel()
	cfg := receive.AdmissionConfig{ShortRatio: 3, MediumRatio: 2, LongRatio: 1.5, Floor: 20, Fraction: 0.5}
	skewed, _ := monitor(t, cfg)
	skewed.Observe(t.Context(), "seed", a0.Add(time.Hour)) // the skewed clock
	state, err := skewed.State()
	require.NoError(t, err)
	cfg.State = state
	m, logs := monitor(t, cfg)
	windows(m, a0, 12, 5, "fresh") // 5 a window: never an alarm
	require.Empty(t, alarms(t, logs))
}
