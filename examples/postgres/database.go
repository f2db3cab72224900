package main

// This file is the example's own convenience, not part of what to copy:
// your program reads DATABASE_URL (or its own configuration) and connects.

import (
	"fmt"
	"os"
	"time"

	"github.com/adcpkit/webhook/internal/pgtest"
)

// databaseURL returns DATABASE_URL, or, when it is unset, the URL of a
// throwaway PostgreSQL started from the initdb and postgres binaries on
// this machine, and a func that removes it.
func databaseURL() (url string, stop func(), err error) {
	if url := os.Getenv("DATABASE_URL"); url != "" {
		fmt.Println("using the database at DATABASE_URL")
		return url, func() {}, nil
	}
	start := time.Now()
	url, stop, err = pgtest.StartDatabase("example")
	if err != nil {
		return "", nil, fmt.Errorf("DATABASE_URL is unset and a throwaway PostgreSQL could not be started: %w", err)
	}
	fmt.Printf("started a throwaway PostgreSQL in %v (set DATABASE_URL to use your own)\n", time.Since(start).Round(time.Millisecond))
	return url, stop, nil
}
