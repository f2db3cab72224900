package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestSpreadOf(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		want spread
	}{
		{nil, spread{}},
		{[]float64{3}, spread{3, 3, 3}},
		{[]float64{5, 1, 3}, spread{3, 1, 5}},
		{[]float64{4, 1, 3, 10}, spread{3.5, 1, 10}},
	} {
		if got := spreadOf(tc.in); got != tc.want {
			t.Errorf("spreadOf(%v) = %+v, want %+v", tc.in, got, tc.want)
		}
	}
}

// Ratios pair the runs of the same round: a system that is slow in the
// round where the library is slow too does not look faster for it.
func TestSummarizePairsRunsByRound(t *testing.T) {
	lib, other := "PostgresSupervisor", "river"
	runs := []result{
		{Scenario: "burst", System: lib, Run: 1, PerSecond: 1000},
		{Scenario: "burst", System: other, Run: 1, PerSecond: 500},
		{Scenario: "burst", System: other, Run: 2, PerSecond: 1000}, // interleaved: the other went first
		{Scenario: "burst", System: lib, Run: 2, PerSecond: 3000},
		{Scenario: "burst", System: lib, Run: 3, PerSecond: 1200},
		{Scenario: "burst", System: other, Run: 3, Err: "boom"},
		{Scenario: "steady", System: other, Run: 1, PerSecond: 10, FirstP99: 4, DeliveredP99: 6},
	}
	sums := summarize(runs)
	if len(sums) != 3 {
		t.Fatalf("got %d summaries: %+v", len(sums), sums)
	}
	l, o, steady := sums[0], sums[1], sums[2]
	if l.System != lib || l.Runs != 3 || l.PerSecond != (spread{1200, 1000, 3000}) || l.Ratio != nil {
		t.Errorf("library: %+v", l)
	}
	if o.Runs != 3 || o.Failed != 1 || o.PerSecond != (spread{750, 500, 1000}) {
		t.Errorf("other: %+v", o)
	}
	// Run 1: 1000/500 = 2; run 2: 3000/1000 = 3; run 3 failed: no pair.
	if o.Ratio == nil || *o.Ratio != (spread{2.5, 2, 3}) {
		t.Errorf("ratio: %+v", o.Ratio)
	}
	if steady.Ratio != nil || steady.FirstP99 != (spread{4, 4, 4}) {
		t.Errorf("steady: %+v", steady)
	}
	var b bytes.Buffer
	printSummary(&b, sums)
	for _, want := range []string{"2.50 (2.00–3.00)", "3 (1 failed)", "750 (500–1000)"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, b.String())
		}
	}
}
