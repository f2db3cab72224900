package pgtest

import (
	"errors"
	"fmt"
	"os"

	"github.com/jackc/pgx/v5"
)

// Cluster is a private PostgreSQL cluster for programs that are not tests
// (the bench harness): the same throwaway cluster New uses, under the
// caller's control.
type Cluster struct {
	s *server
}

// StartCluster initialises and starts a private cluster from the binaries
// New would use, on a free loopback port with its data in a temporary
// directory, with extra server settings ("name=value", as postgres -c
// takes them). Stop it with Stop.
func StartCluster(settings ...string) (*Cluster, error) {
	if !clusterSupported {
		return nil, errors.New("pgtest: cannot start a cluster on this OS")
	}
	bin, err := findBin()
	if err != nil {
		return nil, fmt.Errorf("pgtest: %w", err)
	}
	s, err := newServer(bin, settings...)
	if err != nil {
		return nil, fmt.Errorf("pgtest: %w", err)
	}
	return &Cluster{s: s}, nil
}

// URL is the connection string of the cluster's postgres database.
func (c *Cluster) URL() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", c.s.port)
}

// CreateDatabase creates an empty database and returns its connection
// string.
func (c *Cluster) CreateDatabase(name string) (string, error) {
	if err := exec1(c.URL(), "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()+" TEMPLATE template0"); err != nil {
		return "", err
	}
	return withDatabase(c.URL(), name), nil
}

// Restart stops the cluster (fast shutdown) and starts it again on the same
// port and data, returning once it accepts connections.
func (c *Cluster) Restart() error {
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	if err := c.s.stop(); err != nil {
		return err
	}
	return c.s.start()
}

// Stop stops the cluster and removes its directory.
func (c *Cluster) Stop() error {
	c.s.mu.Lock()
	err := c.s.stop()
	c.s.mu.Unlock()
	return errors.Join(err, os.RemoveAll(c.s.dir))
}

// StartDatabase starts a cluster and creates one empty database, name, on
// it: what an example program needs. It returns the database's URL and a
// function that stops the cluster and removes it.
func StartDatabase(name string) (url string, stop func(), err error) {
	c, err := StartCluster()
	if err != nil {
		return "", nil, fmt.Errorf("%w\nInstall the PostgreSQL server (Debian: apt-get install postgresql) or set DATABASE_URL", err)
	}
	url, err = c.CreateDatabase(name)
	if err != nil {
		_ = c.Stop()
		return "", nil, err
	}
	return url, func() { _ = c.Stop() }, nil
}
