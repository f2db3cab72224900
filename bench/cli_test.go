package main

import (
	"strings"
	"testing"
)

// The command line refuses what it would otherwise run silently: a stray
// word, and scenario or system names that match nothing.
func TestCommandLineRefusesUnknownNames(t *testing.T) {
	if err := runBench([]string{"help"}); err != nil {
		t.Fatalf("help: %v", err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"bogus"}, `unknown command "bogus"`},
		{[]string{"-scenarios", "burst,brust"}, `unknown scenario "brust"`},
		{[]string{"-systems", "River"}, `unknown system "River"`},
	} {
		err := runBench(tc.args)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: got %v, want an error containing %s", tc.args, err, tc.want)
		}
	}
	if err := runBench([]string{"-systems", "River"}); !strings.Contains(err.Error(), `"river"`) {
		t.Errorf("the error lists the valid names: %v", err)
	}
}
