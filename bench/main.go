// Command bench measures the webhook library end to end against what a Go
// team would otherwise build, and soaks it in chaos.
//
//	go run .            # the benchmark scenarios, a table
//	go run . -quick     # the same, small (under two minutes)
//	go run . chaos      # kill -9 soak: nothing may be lost
//	go run . help       # the flags
//
// It starts its own throwaway Postgres (from Debian's postgresql binaries)
// and loopback receivers; it needs nothing else.
package main

import (
	"fmt"
	"os"
)

func main() {
	var err error
	args := os.Args[1:]
	switch {
	case len(args) > 0 && args[0] == "chaos":
		err = runChaos(args[1:])
	case len(args) > 0 && args[0] == "chaos-worker":
		err = runChaosWorker(args[1:])
	case len(args) > 0 && args[0] == "bench-worker":
		err = runBenchWorker(args[1:])
	default:
		err = runBench(args)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
