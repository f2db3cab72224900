package main

import (
	"fmt"

	"github.com/adcpkit/webhook/internal/pgtest"
)

// startPostgres starts a throwaway PostgreSQL (the tests' own: initdb and
// postgres from PATH or /usr/lib/postgresql/*/bin, a free loopback port, a
// temporary directory, as the postgres user when run as root) and returns
// the URL of an empty database on it, and how to stop it and remove it.
func startPostgres() (url string, stop func(), err error) {
	c, err := pgtest.StartCluster()
	if err != nil {
		return "", nil, fmt.Errorf("%w\nInstall the PostgreSQL server (Debian: apt-get install postgresql) or set DATABASE_URL", err)
	}
	url, err = c.CreateDatabase("example")
	if err != nil {
		_ = c.Stop()
		return "", nil, err
	}
	return url, func() { _ = c.Stop() }, nil
}
