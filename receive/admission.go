package receive

import (
	"context"
	"encoding/json"
	"log/slog"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"time"
)

// New-keyid admission pressure (AdCP security, "Webhook replay dedup
// sizing"): a verifier tracks how many previously unseen keyids it admits
// per window, and alarms when that exceeds any of four thresholds, each
// closing a distinct attack shape. The shapes are normative; the values are
// the operator's: webhook-verifier-tuning's starting values are defaults
// here, jittered per process.

// AdmissionConfig configures [NewAdmissionMonitor]. Every threshold is
// tunable; a zero field takes the tuning guide's starting value multiplied
// by a factor drawn log-uniformly from [0.5, 2] when the monitor is made
// (so that a fleet does not share one published threshold). Tune each
// within 30 days of the first admission: until then, a
// threshold_tuning_overdue event is logged daily.
type AdmissionConfig struct {
	// ShortRatio is clause (a): alarm when a window admits more than
	// ShortRatio times the 24-hour moving average. Starting value 3.
	ShortRatio float64
	// MediumRatio is clause (b): more than MediumRatio times the 30-day
	// 95th percentile of windows. Starting value 2.
	MediumRatio float64
	// LongRatio is clause (c): more than LongRatio times the 90-day 99th
	// percentile. Starting value 1.5.
	LongRatio float64
	// Floor and Fraction are clause (d): more than max(Floor, Fraction ×
	// the keyids seen in 30 days). Starting values 20 and 0.10. Each ratio
	// clause also compares against at least Floor, so that a near-zero
	// baseline (a new or sparse verifier) does not alarm on every
	// onboarding.
	Floor    float64
	Fraction float64
	// Window is the counting window. Defaults to 5 minutes.
	Window time.Duration
	// Logger receives the alarms (Warn). Defaults to slog.Default().
	Logger *slog.Logger
	// State, when set, restores what a monitor saved with
	// [AdmissionMonitor.State]: the keyids seen, the windows' history, the
	// first admission and the starting values drawn for zero thresholds.
	// Without it a restarted process counts every established keyid as
	// new (and alarms, with enough sellers), forgets its baselines (an
	// attacker may time an attack to a deploy) and draws new jitter.
	State []byte
}

// Admission thresholds' starting values, from the tuning guide.
const (
	admissionShortStart    = 3.0
	admissionMediumStart   = 2.0
	admissionLongStart     = 1.5
	admissionFloorStart    = 20.0
	admissionFractionStart = 0.10
)

// AdmissionThresholds are the thresholds a monitor applies.
type AdmissionThresholds struct {
	ShortRatio  float64 `json:"short_ratio"`
	MediumRatio float64 `json:"medium_ratio"`
	LongRatio   float64 `json:"long_ratio"`
	Floor       float64 `json:"floor"`
	Fraction    float64 `json:"fraction"`
	// Untuned names the thresholds left at a (jittered) starting value.
	Untuned []string `json:"untuned"`
}

// AdmissionMonitor counts first admissions of keyids and alarms on
// admission pressure. Give one to every [Verifier] of a process
// ([VerifierConfig.Admissions]): the attack it watches for spans sellers.
// Each process counts what it admits: a fleet behind a load balancer
// alarms on every pod. It is safe for concurrent use.
type AdmissionMonitor struct {
	th     AdmissionThresholds
	window time.Duration
	log    *slog.Logger

	mu          sync.Mutex
	seen        map[string]time.Time // keyid → last admitted, for 30 days
	current     time.Time            // start of the counting window
	count       int                  // new keyids in it
	history     []int                // closed windows, oldest first, at most 90 days
	alarmed     [4]bool              // clauses alarmed in the current window
	base        [3]float64           // clauses (a) to (c)'s baselines
	first       time.Time            // first admission
	lastOverdue time.Time
}

// admissionState is the JSON of [AdmissionMonitor.State].
type admissionState struct {
	Version     int                  `json:"version"`
	Window      time.Duration        `json:"window"`
	Thresholds  AdmissionThresholds  `json:"thresholds"`
	Seen        map[string]time.Time `json:"seen"`
	Current     time.Time            `json:"current"`
	Count       int                  `json:"count"`
	History     []int                `json:"history"`
	First       time.Time            `json:"first"`
	LastOverdue time.Time            `json:"last_overdue"`
}

// NewAdmissionMonitor returns a monitor for cfg; a negative threshold, or
// a State that does not parse or was saved with another Window, is a
// [*ConfigError].
func NewAdmissionMonitor(cfg AdmissionConfig) (*AdmissionMonitor, error) {
	m := &AdmissionMonitor{window: cfg.Window, log: cfg.Logger, seen: map[string]time.Time{}}
	if m.window == 0 {
		m.window = 5 * time.Minute
	}
	if m.window < time.Second {
		return nil, badConfig("AdmissionConfig.Window", "is %v; use at least a second, or zero for 5m", cfg.Window)
	}
	if m.log == nil {
		m.log = slog.Default()
	}
	var saved admissionState
	if cfg.State != nil {
		if err := json.Unmarshal(cfg.State, &saved); err != nil || saved.Version != 1 {
			return nil, badConfig("AdmissionConfig.State", "is not a state saved by AdmissionMonitor.State")
		}
		if saved.Window != m.window {
			return nil, badConfig("AdmissionConfig.State", "was saved with a %v window, not %v; its history does not apply", saved.Window, m.window)
		}
	}
	drawn := map[string]float64{"ShortRatio": saved.Thresholds.ShortRatio, "MediumRatio": saved.Thresholds.MediumRatio,
		"LongRatio": saved.Thresholds.LongRatio, "Floor": saved.Thresholds.Floor, "Fraction": saved.Thresholds.Fraction}
	pick := func(name string, v, start float64) float64 {
		if v < 0 || math.IsNaN(v) || math.IsInf(v, 0) {
			v = math.NaN()
			return v
		}
		if v == 0 {
			m.th.Untuned = append(m.th.Untuned, name)
			if d := drawn[name]; d > 0 && slices.Contains(saved.Thresholds.Untuned, name) {
				return d // drawn on first deployment, kept
			}
			return start * math.Exp2(rand.Float64()*2-1) // log-uniform in [0.5, 2]
		}
		return v
	}
	m.th.ShortRatio = pick("ShortRatio", cfg.ShortRatio, admissionShortStart)
	m.th.MediumRatio = pick("MediumRatio", cfg.MediumRatio, admissionMediumStart)
	m.th.LongRatio = pick("LongRatio", cfg.LongRatio, admissionLongStart)
	m.th.Floor = pick("Floor", cfg.Floor, admissionFloorStart)
	m.th.Fraction = pick("Fraction", cfg.Fraction, admissionFractionStart)
	for name, v := range map[string]float64{"ShortRatio": m.th.ShortRatio, "MediumRatio": m.th.MediumRatio,
		"LongRatio": m.th.LongRatio, "Floor": m.th.Floor, "Fraction": m.th.Fraction} {
		if math.IsNaN(v) {
			return nil, badConfig("AdmissionConfig."+name, "is negative or not a number; use a positive value, or zero for the jittered starting value")
		}
	}
	if cfg.State != nil {
		if saved.Seen != nil {
			m.seen = saved.Seen
		}
		keep := m.windowsPer(90 * 24 * time.Hour)
		m.history = saved.History[max(0, len(saved.History)-keep):]
		m.current, m.count, m.first, m.lastOverdue = saved.Current, saved.Count, saved.First, saved.LastOverdue
		m.baselines()
	}
	return m, nil
}

// State returns what the monitor knows, as JSON, for AdmissionConfig.State
// of the next process: save it every window or so, and at shutdown.
func (m *AdmissionMonitor) State() ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return json.Marshal(admissionState{Version: 1, Window: m.window, Thresholds: m.th, Seen: m.seen, Current: m.current,
		Count: m.count, History: m.history, First: m.first, LastOverdue: m.lastOverdue})
}

// Thresholds returns the thresholds in force, for the operator's runbook.
func (m *AdmissionMonitor) Thresholds() AdmissionThresholds {
	th := m.th
	th.Untuned = slices.Clone(th.Untuned)
	return th
}

// windowsPer is how many windows span d.
func (m *AdmissionMonitor) windowsPer(d time.Duration) int { return max(1, int(d/m.window)) }

// Observe records that keyID had a signature accepted at now; a keyid not
// seen in 30 days counts as a new admission, which may raise an alarm.
func (m *AdmissionMonitor) Observe(ctx context.Context, keyID string, now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.roll(now)
	if len(m.th.Untuned) > 0 && !m.first.IsZero() && now.Sub(m.first) > 30*24*time.Hour && now.Sub(m.lastOverdue) >= 24*time.Hour {
		m.lastOverdue = now
		m.log.LogAttrs(ctx, slog.LevelWarn, "receive: threshold_tuning_overdue: admission thresholds are still at their starting values 30 days after the first admission; baseline your traffic and set them",
			slog.Any("untuned", m.th.Untuned))
	}
	last, known := m.seen[keyID]
	m.seen[keyID] = now
	if known && now.Sub(last) < 30*24*time.Hour {
		return
	}
	if m.first.IsZero() {
		m.first = now
	}
	m.count++
	m.check(ctx)
}

// roll closes the windows that ended before now.
func (m *AdmissionMonitor) roll(now time.Time) {
	start := now.Truncate(m.window)
	if m.current.IsZero() {
		m.current = start
		return
	}
	if m.current.After(start) { // the clock went back, or a state saved by a clock ahead: count from now's window
		m.current, m.count, m.alarmed = start, 0, [4]bool{}
		return
	}
	if !m.current.Before(start) {
		return
	}
	keep := m.windowsPer(90 * 24 * time.Hour)
	for closed := 0; m.current.Before(start); closed++ {
		if closed >= keep { // idle for longer than the history: all zeros
			m.history = m.history[:0]
			m.current = start
			break
		}
		m.history = append(m.history, m.count)
		m.count, m.alarmed = 0, [4]bool{}
		m.current = m.current.Add(m.window)
	}
	if len(m.history) > keep {
		m.history = append(m.history[:0], m.history[len(m.history)-keep:]...)
	}
	for k, t := range m.seen {
		if now.Sub(t) >= 30*24*time.Hour {
			delete(m.seen, k)
		}
	}
	m.baselines()
}

// baselines recomputes clauses (a) to (c)'s baselines from the closed
// windows: once per window, not per admission.
func (m *AdmissionMonitor) baselines() {
	tail := func(d time.Duration) []int {
		n := min(len(m.history), m.windowsPer(d))
		return m.history[len(m.history)-n:]
	}
	mean := func(xs []int) float64 {
		if len(xs) == 0 {
			return 0
		}
		s := 0
		for _, x := range xs {
			s += x
		}
		return float64(s) / float64(len(xs))
	}
	pct := func(xs []int, p float64) float64 {
		if len(xs) == 0 {
			return 0
		}
		s := slices.Clone(xs)
		slices.Sort(s)
		return float64(s[int(math.Ceil(p*float64(len(s))))-1])
	}
	m.base = [3]float64{mean(tail(24 * time.Hour)), pct(tail(30*24*time.Hour), 0.95), pct(tail(90*24*time.Hour), 0.99)}
}

// check raises the alarms of the current window's count.
func (m *AdmissionMonitor) check(ctx context.Context) {
	floor := m.th.Floor
	clauses := [4]struct {
		name, what string
		baseline   float64
		threshold  float64
	}{
		{"a", "short-window ratio: the 24-hour moving average", 0, 0},
		{"b", "medium-window ratio: the 30-day 95th percentile", 0, 0},
		{"c", "long-window ratio: the 90-day 99th percentile", 0, 0},
		{"d", "proportional ceiling: the keyids seen in 30 days", 0, 0},
	}
	clauses[0].baseline = m.base[0]
	clauses[0].threshold = m.th.ShortRatio * max(clauses[0].baseline, floor)
	clauses[1].baseline = m.base[1]
	clauses[1].threshold = m.th.MediumRatio * max(clauses[1].baseline, floor)
	clauses[2].baseline = m.base[2]
	clauses[2].threshold = m.th.LongRatio * max(clauses[2].baseline, floor)
	clauses[3].baseline = float64(len(m.seen))
	clauses[3].threshold = max(floor, m.th.Fraction*clauses[3].baseline)
	for i, c := range clauses {
		if float64(m.count) > c.threshold && !m.alarmed[i] {
			m.alarmed[i] = true
			m.log.LogAttrs(ctx, slog.LevelWarn, "receive: ALARM: new-keyid admission pressure; route to incident response (do not revoke automatically)",
				slog.String("clause", c.name), slog.String("rule", c.what), slog.Int("new_keyids_in_window", m.count),
				slog.Float64("threshold", c.threshold), slog.Float64("baseline", c.baseline), slog.Duration("window", m.window))
		}
	}
}
