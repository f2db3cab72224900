//go:build linux

package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// startPostgres runs initdb and postgres (from PATH, else the newest
// /usr/lib/postgresql/*/bin) in a new temporary directory, listening on
// 127.0.0.1 on a free port with trust authentication, and returns its URL
// once it accepts connections. stop shuts it down and removes the directory.
// As root, PostgreSQL runs as the postgres user: it refuses to run as root.
func startPostgres() (url string, stop func(), err error) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	version := func(d string) float64 { v, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(d)), 64); return v }
	slices.SortFunc(dirs, func(a, b string) int { return cmp.Compare(version(b), version(a)) })
	if p, err := exec.LookPath("initdb"); err == nil {
		if p, err = filepath.EvalSymlinks(p); err == nil {
			dirs = slices.Insert(dirs, 0, filepath.Dir(p))
		}
	}
	i := slices.IndexFunc(dirs, func(d string) bool { _, err := os.Stat(filepath.Join(d, "postgres")); return err == nil })
	if i < 0 {
		return "", nil, errors.New("no initdb and postgres on PATH or under /usr/lib/postgresql/*/bin: " +
			"install the PostgreSQL server (Debian: apt-get install postgresql) or set DATABASE_URL")
	}
	dir, err := os.MkdirTemp("", "webhook-example-pg-")
	if err != nil {
		return "", nil, err
	}
	logFile, err := os.Create(filepath.Join(dir, "postgres.log"))
	if err != nil {
		_ = os.RemoveAll(dir)
		return "", nil, err
	}
	var pg *exec.Cmd
	exited := make(chan struct{})
	cleanup := func() {
		if pg != nil {
			_ = pg.Process.Signal(os.Interrupt) // fast shutdown
			select {
			case <-exited:
			case <-time.After(10 * time.Second):
				_ = syscall.Kill(-pg.Process.Pid, syscall.SIGKILL)
				<-exited
			}
		}
		_ = logFile.Close()
		_ = os.RemoveAll(dir)
	}
	defer func() {
		if err != nil { // add the end of the server's log, then clean up
			log, _ := os.ReadFile(logFile.Name())
			cleanup()
			err = fmt.Errorf("%w\npostgres log ends:\n%s", err, log[max(0, len(log)-1500):])
		}
	}()

	// Its own process group, so that Ctrl-C reaches only this program, which
	// then stops it; and a fast shutdown should this program die.
	attr := &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGINT}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return "", nil, fmt.Errorf("running as root, so PostgreSQL must run as user postgres: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		attr.Credential = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(dir, uid, gid); err != nil {
			return "", nil, err
		}
	}
	command := func(name string, args ...string) *exec.Cmd {
		cmd := exec.Command(filepath.Join(dirs[i], name), args...)
		cmd.Dir, cmd.Stdout, cmd.Stderr, cmd.SysProcAttr = dir, logFile, logFile, attr
		return cmd
	}
	l, err := net.Listen("tcp", "127.0.0.1:0") // find a free port
	if err != nil {
		return "", nil, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()

	data := filepath.Join(dir, "data")
	if err := command("initdb", "-D", data, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8", "--locale=C").Run(); err != nil {
		return "", nil, fmt.Errorf("initdb: %w", err)
	}
	cmd := command("postgres", "-D", data, "-p", strconv.Itoa(port), "-c", "listen_addresses=127.0.0.1",
		"-c", "unix_socket_directories=", "-c", "fsync=off")
	if err := cmd.Start(); err != nil {
		return "", nil, fmt.Errorf("starting postgres: %w", err)
	}
	pg = cmd
	go func() { _ = pg.Wait(); close(exited) }()

	url = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port)
	for deadline := time.Now().Add(30 * time.Second); ; {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		conn, err := pgx.Connect(ctx, url)
		cancel()
		if err == nil {
			_ = conn.Close(context.Background())
			return url, cleanup, nil
		}
		select {
		case <-exited:
			return "", nil, errors.New("postgres exited during startup")
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return "", nil, fmt.Errorf("postgres did not accept connections within 30s: %w", err)
		}
	}
}
