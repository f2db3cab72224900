// Package pgtest gives tests a throwaway PostgreSQL database.
//
// Each call to New or URL creates a fresh, empty database with a unique name
// and drops it when the test ends. The databases live on one server per test
// process:
//
//   - If TEST_DATABASE_URL is set, that server is used. Its user must be
//     allowed to CREATE DATABASE; the URL's own database is used only for
//     maintenance.
//   - Otherwise pgtest starts a private cluster the first time it is needed,
//     from the initdb and postgres binaries found on PATH or under
//     /usr/lib/postgresql/*/bin (highest version first). The cluster listens
//     on 127.0.0.1 on a free port and keeps its data in a temporary directory.
//     When running as root the binaries run as the "postgres" user, since
//     PostgreSQL refuses to run as root. Set PGTEST_FAST=1 to run it with
//     fsync=off.
//
// A package that uses New or URL must stop that cluster from its TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }
//
// or, together with goleak, goleak.VerifyTestMain(pgtest.Wrap(m)).
//
// When no server can be had, New and URL skip the test with a message saying
// what to install, or fail it if WEBHOOK_REQUIRE_POSTGRES=1. The attempt to
// get a server is made once per process; later tests skip or fail at once.
//
// The private cluster is supported on Linux only; elsewhere set
// TEST_DATABASE_URL.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// MaxConns is the pool size New uses. It is modest because many parallel
// tests share one server.
const MaxConns = 8

const (
	readyTimeout = 30 * time.Second // for the cluster to accept connections
	stopTimeout  = 30 * time.Second // for a fast shutdown before SIGKILL
	queryTimeout = 30 * time.Second // for CREATE and DROP DATABASE
)

var (
	once     sync.Once
	adminURL string  // maintenance connection string
	cluster  *server // the private cluster, or nil
	setupErr error   // why there is no server, if there is none
	seq      atomic.Uint64
)

// server is a private cluster run as a child process.
type server struct {
	mu       sync.Mutex
	bin      string // directory holding initdb and postgres
	dir      string // temporary directory: data/, postgres.log
	port     int
	settings []string // extra name=value server settings
	runAs    *osUser  // nil unless running as root
	cmd      *exec.Cmd
	exited   chan struct{} // closed when cmd has exited
	waitErr  error         // cmd.Wait's result, once exited is closed
}

type osUser struct{ uid, gid uint32 }

// New returns a pool, of at most MaxConns connections, on a fresh empty
// database that exists only for t. The pool is closed and the database
// dropped when t ends.
func New(t testing.TB) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(URL(t))
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	cfg.MaxConns = MaxConns
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(pool.Close) // runs before URL's cleanup drops the database
	return pool
}

// URL creates a fresh empty database that exists only for t and returns its
// connection string. The database is dropped, with FORCE, when t ends;
// connections to it still open by then are terminated.
func URL(t testing.TB) string {
	t.Helper()
	admin := server0(t)
	var b [4]byte
	_, _ = rand.Read(b[:])
	name := fmt.Sprintf("t_%d_%s", seq.Add(1), hex.EncodeToString(b[:]))
	ident := pgx.Identifier{name}.Sanitize()
	start := time.Now()
	if err := exec1(admin, "CREATE DATABASE "+ident+" TEMPLATE template0"); err != nil {
		t.Fatalf("pgtest: creating database %s: %v", name, err)
	}
	t.Logf("pgtest: created database %s in %v", name, time.Since(start).Round(time.Microsecond))
	t.Cleanup(func() {
		if err := exec1(admin, "DROP DATABASE IF EXISTS "+ident+" WITH (FORCE)"); err != nil {
			t.Errorf("pgtest: dropping database %s: %v", name, err)
		}
	})
	return withDatabase(admin, name)
}

// Restart stops the private cluster (fast shutdown) and starts it again on
// the same port and data directory, returning once it accepts connections.
// Open connections break; pools reconnect. It skips t when the server comes
// from TEST_DATABASE_URL. Do not run it in parallel with other tests that use
// the server: they would see connection errors.
func Restart(t testing.TB) {
	t.Helper()
	server0(t)
	if cluster == nil {
		t.Skip("pgtest: cannot restart an external server (TEST_DATABASE_URL is set)")
	}
	start := time.Now()
	cluster.mu.Lock()
	defer cluster.mu.Unlock()
	if err := cluster.stop(); err != nil {
		t.Fatalf("pgtest: stopping the cluster: %v", err)
	}
	if err := cluster.start(); err != nil {
		t.Fatalf("pgtest: restarting the cluster: %v", err)
	}
	t.Logf("pgtest: restarted the cluster in %v", time.Since(start).Round(time.Millisecond))
}

// Main runs m and then stops the private cluster, if one was started, and
// removes its directory. Call it from TestMain: os.Exit(pgtest.Main(m)).
func Main(m interface{ Run() int }) int {
	code := m.Run()
	if c := cluster; c != nil {
		c.mu.Lock()
		if err := c.stop(); err != nil {
			fmt.Fprintf(os.Stderr, "pgtest: stopping the cluster: %v\n", err)
		}
		c.mu.Unlock()
		_ = os.RemoveAll(c.dir)
	}
	return code
}

// Wrap returns m with a Run that calls Main(m), for handing m on to another
// test main, e.g. goleak.VerifyTestMain(pgtest.Wrap(m)).
func Wrap(m *testing.M) interface{ Run() int } { return wrapped{m} }

type wrapped struct{ m *testing.M }

func (w wrapped) Run() int { return Main(w.m) }

// server0 returns the maintenance connection string, getting a server the
// first time, or skips or fails t if there is none.
func server0(t testing.TB) string {
	t.Helper()
	once.Do(func() {
		start := time.Now()
		if setupErr = setup(); setupErr == nil && cluster != nil {
			t.Logf("pgtest: started a cluster from %s on port %d in %v",
				cluster.bin, cluster.port, time.Since(start).Round(time.Millisecond))
		}
	})
	if setupErr != nil {
		fix := "install the PostgreSQL server (Debian: apt-get install postgresql) so that " +
			"initdb and postgres are on PATH or under /usr/lib/postgresql/*/bin, or set " +
			"TEST_DATABASE_URL to a server whose user may CREATE DATABASE."
		if os.Getenv("TEST_DATABASE_URL") != "" {
			fix = "make TEST_DATABASE_URL name a reachable server, or unset it to start one from the local PostgreSQL binaries."
		}
		msg := fmt.Sprintf("pgtest: no PostgreSQL server for tests: %v\nTo fix: %s", setupErr, fix)
		if os.Getenv("WEBHOOK_REQUIRE_POSTGRES") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg + "\nSet WEBHOOK_REQUIRE_POSTGRES=1 to fail instead of skipping.")
	}
	return adminURL
}

func setup() error {
	if u := os.Getenv("TEST_DATABASE_URL"); u != "" {
		adminURL = u
		if err := exec1(u, "SELECT 1"); err != nil {
			return fmt.Errorf("TEST_DATABASE_URL: %w", err)
		}
		return nil
	}
	if !clusterSupported {
		return errors.New("TEST_DATABASE_URL is unset and pgtest cannot start a cluster on this OS")
	}
	bin, err := findBin()
	if err != nil {
		return err
	}
	s, err := newServer(bin)
	if err != nil {
		return err
	}
	cluster = s
	adminURL = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", s.port)
	return nil
}

// findBin returns a directory holding both initdb and postgres.
func findBin() (string, error) {
	var dirs []string
	if p, err := exec.LookPath("initdb"); err == nil {
		if r, err := filepath.EvalSymlinks(p); err == nil {
			p = r
		}
		dirs = append(dirs, filepath.Dir(p))
	}
	versions, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	version := func(dir string) float64 {
		v, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(dir)), 64)
		return v
	}
	sort.Slice(versions, func(i, j int) bool { return version(versions[i]) > version(versions[j]) })
	for _, d := range append(dirs, versions...) {
		if isExecutable(filepath.Join(d, "initdb")) && isExecutable(filepath.Join(d, "postgres")) {
			return d, nil
		}
	}
	return "", errors.New("TEST_DATABASE_URL is unset and no initdb and postgres " +
		"were found on PATH or under /usr/lib/postgresql/*/bin")
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// newServer initialises a cluster in a new temporary directory and starts it.
func newServer(bin string, settings ...string) (s *server, err error) {
	dir, err := os.MkdirTemp("", "pgtest-")
	if err != nil {
		return nil, err
	}
	s = &server{bin: bin, dir: dir, settings: settings}
	defer func() {
		if err != nil {
			_ = os.RemoveAll(dir)
		}
	}()
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("running as root, so PostgreSQL must run as user postgres: %w", err)
		}
		uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
		gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
		if err := errors.Join(err1, err2); err != nil {
			return nil, fmt.Errorf("user postgres: %w", err)
		}
		s.runAs = &osUser{uint32(uid), uint32(gid)}
		if err := os.Chown(dir, int(uid), int(gid)); err != nil {
			return nil, err
		}
	}
	if s.port, err = freePort(); err != nil {
		return nil, err
	}
	initdb := s.command("initdb", "-D", s.data(), "-A", "trust", "-U", "postgres",
		"--no-sync", "-E", "UTF8", "--locale=C")
	if err = s.startLogged(initdb); err == nil {
		err = initdb.Wait()
	}
	if err != nil {
		return nil, fmt.Errorf("initdb: %w%s", err, s.logTail())
	}
	if err := s.start(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *server) data() string    { return filepath.Join(s.dir, "data") }
func (s *server) logPath() string { return filepath.Join(s.dir, "postgres.log") }

// command returns a command for one of the cluster's binaries, to run as the
// postgres user when needed, in its own process group, logging to the log.
func (s *server) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(s.bin, name), args...)
	cmd.Dir = s.dir
	cmd.SysProcAttr = procAttr(s.runAs)
	return cmd
}

// startLogged starts cmd with its output appended to the log.
func (s *server) startLogged(cmd *exec.Cmd) error {
	f, err := os.OpenFile(s.logPath(), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer f.Close() // the child has its own copy
	cmd.Stdout, cmd.Stderr = f, f
	return cmd.Start()
}

// start starts postgres and waits until it accepts connections. s.mu is held,
// or s is not yet shared.
func (s *server) start() error {
	args := []string{"-D", s.data(), "-p", strconv.Itoa(s.port),
		"-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=",
		"-c", "max_connections=300"}
	if os.Getenv("PGTEST_FAST") == "1" {
		args = append(args, "-c", "fsync=off")
	}
	for _, kv := range s.settings {
		args = append(args, "-c", kv)
	}
	cmd := s.command("postgres", args...)
	if err := s.startLogged(cmd); err != nil {
		return fmt.Errorf("starting postgres: %w", err)
	}
	s.cmd, s.exited = cmd, make(chan struct{})
	go func(exited chan struct{}) { s.waitErr = cmd.Wait(); close(exited) }(s.exited)

	url := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable&connect_timeout=2", s.port)
	deadline := time.Now().Add(readyTimeout)
	for {
		err := exec1(url, "SELECT 1")
		if err == nil {
			return nil
		}
		select {
		case <-s.exited:
			s.cmd = nil
			return fmt.Errorf("postgres exited during startup: %v%s", s.waitErr, s.logTail())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			_ = s.stop()
			return fmt.Errorf("postgres did not accept connections within %v: %v%s", readyTimeout, err, s.logTail())
		}
	}
}

// stop shuts postgres down fast (SIGINT), killing its process group if that
// takes too long. s.mu is held.
func (s *server) stop() error {
	if s.cmd == nil {
		return nil
	}
	defer func() { s.cmd = nil }()
	_ = s.cmd.Process.Signal(os.Interrupt)
	select {
	case <-s.exited:
		return nil
	case <-time.After(stopTimeout):
		killGroup(s.cmd.Process.Pid)
		<-s.exited
		return fmt.Errorf("postgres ignored a fast shutdown for %v and was killed%s", stopTimeout, s.logTail())
	}
}

// logTail returns the end of the log, for error messages.
func (s *server) logTail() string {
	b, err := os.ReadFile(s.logPath())
	if err != nil || len(b) == 0 {
		return ""
	}
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return "\n" + s.logPath() + " ends:\n" + strings.TrimRight(string(b), "\n")
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// exec1 runs one statement on a new connection to connString.
func exec1(connString, sql string) error {
	ctx, cancel := context.WithTimeout(context.Background(), queryTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, connString)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, sql)
	return err
}

// withDatabase returns connString with its database replaced by name.
func withDatabase(connString, name string) string {
	if u, err := url.Parse(connString); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		u.Path, u.RawPath = "/"+name, ""
		return u.String()
	}
	return connString + " dbname=" + name // keyword/value form: the last dbname wins
}
