package main

import (
	"fmt"
	"io"
	"slices"
	"text/tabwriter"
)

// The paired mode (-repeat N): every system runs each scenario N times,
// the systems interleaved run by run, so that a drift of the machine
// (another process, the page cache, a checkpoint) falls on all of them
// alike; each figure is reported as its median and range, and each ratio
// as the median of the per-run ratios (PostgresSupervisor's run r against
// the other system's run r), with its range.

// spread is a figure over runs.
type spread struct {
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
}

// spreadOf returns the median and range of xs (zero for none).
func spreadOf(xs []float64) spread {
	if len(xs) == 0 {
		return spread{}
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	m := s[len(s)/2]
	if len(s)%2 == 0 {
		m = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return spread{Median: m, Min: s[0], Max: s[len(s)-1]}
}

// summary is one scenario × system over its runs.
type summary struct {
	Scenario  string `json:"scenario"`
	System    string `json:"system"`
	Runs      int    `json:"runs"`
	Failed    int    `json:"failed_runs,omitempty"`
	PerSecond spread `json:"deliveries_per_second"`
	Accepted  spread `json:"accepted_per_second"`
	// Ratio is PostgresSupervisor's rate over this system's, run by run;
	// nil for PostgresSupervisor itself, or without a paired run.
	Ratio         *spread `json:"postgres_supervisor_ratio,omitempty"`
	FirstP99      spread  `json:"first_attempt_p99_ms"`
	DeliveredP99  spread  `json:"delivered_p99_ms"`
	StmtsPerDeliv spread  `json:"statements_per_delivery"`
	TxPerDelivery spread  `json:"transactions_per_delivery"`
	RSSMB         spread  `json:"rss_mb"`
	CPUPerDeliv   spread  `json:"cpu_us_per_delivery"`
}

// summarize folds runs into one summary per scenario × system, in the
// order they first ran. Failed runs are counted, not measured.
func summarize(runs []result) []summary {
	type key struct{ scenario, system string }
	var order []key
	by := map[key][]result{}
	lib := map[string]map[int]float64{} // scenario -> run -> PostgresSupervisor's rate
	for _, r := range runs {
		k := key{r.Scenario, r.System}
		if _, ok := by[k]; !ok {
			order = append(order, k)
		}
		by[k] = append(by[k], r)
		if r.System == "PostgresSupervisor" && r.Err == "" && r.PerSecond > 0 {
			if lib[r.Scenario] == nil {
				lib[r.Scenario] = map[int]float64{}
			}
			lib[r.Scenario][r.Run] = r.PerSecond
		}
	}
	out := make([]summary, 0, len(order))
	for _, k := range order {
		s := summary{Scenario: k.scenario, System: k.system}
		var rate, acc, ratio, first, done, stmts, tx, rss, cpu []float64
		for _, r := range by[k] {
			s.Runs++
			if r.Err != "" {
				s.Failed++
				continue
			}
			rate, stmts, tx, rss = append(rate, r.PerSecond), append(stmts, r.StmtsPerDeliv), append(tx, r.TxPerDelivery), append(rss, r.RSSMB)
			if r.CPUPerDeliv > 0 {
				cpu = append(cpu, r.CPUPerDeliv)
			}
			if r.AcceptPerSec > 0 {
				acc = append(acc, r.AcceptPerSec)
			}
			if r.FirstP99 > 0 || r.DeliveredP99 > 0 {
				first, done = append(first, r.FirstP99), append(done, r.DeliveredP99)
			}
			if l, ok := lib[k.scenario][r.Run]; ok && k.system != "PostgresSupervisor" && r.PerSecond > 0 {
				ratio = append(ratio, l/r.PerSecond)
			}
		}
		s.PerSecond, s.Accepted, s.FirstP99, s.DeliveredP99 = spreadOf(rate), spreadOf(acc), spreadOf(first), spreadOf(done)
		s.StmtsPerDeliv, s.TxPerDelivery, s.RSSMB, s.CPUPerDeliv = spreadOf(stmts), spreadOf(tx), spreadOf(rss), spreadOf(cpu)
		if len(ratio) > 0 {
			r := spreadOf(ratio)
			s.Ratio = &r
		}
		out = append(out, s)
	}
	return out
}

// printSummary prints the paired table.
func printSummary(out io.Writer, sums []summary) {
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "scenario\tsystem\truns\tdeliveries/s median (range)\tPostgresSupervisor ÷ it, median of pairs (range)\taccepted/s median (range)\tstatements/delivery\ttx/delivery\tCPU µs/delivery median (range)\tfirst attempt p99 ms\tdelivered p99 ms\t")
	for _, s := range sums {
		if s.Failed == s.Runs {
			fmt.Fprintf(w, "%s\t%s\t%d\tevery run failed\t\t\t\t\t\t\t\t\n", s.Scenario, s.System, s.Runs)
			continue
		}
		runs := fmt.Sprint(s.Runs)
		if s.Failed > 0 {
			runs = fmt.Sprintf("%d (%d failed)", s.Runs, s.Failed)
		}
		ratio := ""
		if s.Ratio != nil {
			ratio = fmt.Sprintf("%.2f (%.2f–%.2f)", s.Ratio.Median, s.Ratio.Min, s.Ratio.Max)
		}
		first, done := "", ""
		if s.FirstP99.Max > 0 || s.DeliveredP99.Max > 0 {
			first = fmt.Sprintf("%.1f (%.1f–%.1f)", s.FirstP99.Median, s.FirstP99.Min, s.FirstP99.Max)
			done = fmt.Sprintf("%.1f (%.1f–%.1f)", s.DeliveredP99.Median, s.DeliveredP99.Min, s.DeliveredP99.Max)
		}
		acc := ""
		if s.Accepted.Max > 0 {
			acc = fmt.Sprintf("%.0f (%.0f–%.0f)", s.Accepted.Median, s.Accepted.Min, s.Accepted.Max)
		}
		cpu := ""
		if s.CPUPerDeliv.Max > 0 {
			cpu = fmt.Sprintf("%.0f (%.0f–%.0f)", s.CPUPerDeliv.Median, s.CPUPerDeliv.Min, s.CPUPerDeliv.Max)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%.0f (%.0f–%.0f)\t%s\t%s\t%.2f\t%.2f\t%s\t%s\t%s\t\n", s.Scenario, s.System, runs,
			s.PerSecond.Median, s.PerSecond.Min, s.PerSecond.Max, ratio, acc, s.StmtsPerDeliv.Median, s.TxPerDelivery.Median, cpu, first, done)
	}
	w.Flush()
}
