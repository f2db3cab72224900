package pgtest_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/adcpkit/webhook/internal/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

func TestNewGivesAnEmptyDatabase(t *testing.T) {
	t.Parallel()
	pool := pgtest.New(t)
	ctx := t.Context()

	var one int
	if err := pool.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil || one != 1 {
		t.Fatalf("SELECT 1 = %d, %v", one, err)
	}
	var tables int
	err := pool.QueryRow(ctx, `SELECT count(*) FROM pg_catalog.pg_class c
		JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'`).Scan(&tables)
	if err != nil || tables != 0 {
		t.Fatalf("user relations = %d, %v; want 0", tables, err)
	}
	if got := pool.Config().MaxConns; got != pgtest.MaxConns {
		t.Errorf("MaxConns = %d, want %d", got, pgtest.MaxConns)
	}
}

func TestEachCallGetsItsOwnDatabase(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	a, b := pgtest.New(t), pgtest.New(t)

	var nameA, nameB string
	if err := a.QueryRow(ctx, "SELECT current_database()").Scan(&nameA); err != nil {
		t.Fatal(err)
	}
	if err := b.QueryRow(ctx, "SELECT current_database()").Scan(&nameB); err != nil {
		t.Fatal(err)
	}
	if nameA == nameB {
		t.Fatalf("both pools are on database %q", nameA)
	}
	if _, err := a.Exec(ctx, "CREATE TABLE only_in_a (x int)"); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := b.QueryRow(ctx, "SELECT count(*) FROM pg_catalog.pg_tables WHERE tablename = 'only_in_a'").Scan(&n); err != nil || n != 0 {
		t.Fatalf("table from a seen in b: count %d, %v", n, err)
	}
}

func TestURLIsUsableAndDroppedAfterwards(t *testing.T) {
	t.Parallel()
	var name string
	t.Run("inner", func(t *testing.T) {
		conn, err := pgx.Connect(t.Context(), pgtest.URL(t))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(context.Background())
		if err := conn.QueryRow(t.Context(), "SELECT current_database()").Scan(&name); err != nil {
			t.Fatal(err)
		}
	})
	pool := pgtest.New(t)
	var exists bool
	err := pool.QueryRow(t.Context(), "SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)", name).Scan(&exists)
	if err != nil || exists {
		t.Fatalf("database %q of a finished test still exists: %v, %v", name, exists, err)
	}
}

// TestRestartKeepsData is not parallel: Restart breaks every connection.
func TestRestartKeepsData(t *testing.T) {
	pool := pgtest.New(t)
	ctx := t.Context()
	if _, err := pool.Exec(ctx, "CREATE TABLE kept (v text); INSERT INTO kept VALUES ('before restart')"); err != nil {
		t.Fatal(err)
	}

	pgtest.Restart(t)

	var v string
	var err error
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if err = pool.QueryRow(ctx, "SELECT v FROM kept").Scan(&v); err == nil {
			break
		}
		t.Logf("after restart: %v", err)
	}
	if err != nil || v != "before restart" {
		t.Fatalf("after restart: v = %q, %v", v, err)
	}
}
