package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/adcpkit/webhook"
	"github.com/adcpkit/webhook/internal/opsutil"
	"github.com/adcpkit/webhook/internal/showbody"
)

// Exit statuses.
const (
	exitOK       = 0
	exitFailure  = 1
	exitUsage    = 2
	exitNotFound = 3
	exitSchema   = 4
)

const usage = `webhookctl: operate a github.com/adcpkit/webhook PostgresSupervisor's tables

Usage:
  webhookctl [flags] schema print | migrate | status
  webhookctl [flags] stats
  webhookctl [flags] deliveries list [filters] [--limit N] [--after CURSOR]
  webhookctl [flags] deliveries show ID
  webhookctl [flags] redeliver ID
  webhookctl [flags] redeliver [filters] [--dry-run] [--limit N] [--batch N]
  webhookctl [flags] breakers list
  webhookctl [flags] breakers reset KEY
  webhookctl [flags] purge [--older-than 720h | --before TIME]
  webhookctl [flags] reencrypt [--batch N]

Filters (exact values): --state pending|running|delivered|failed, --url URL,
  --breaker-key KEY, --task ID, --type NOTIFICATION_TYPE, --tenant TENANT,
  --since TIME, --until TIME (acceptance time, RFC 3339)

Encryption at rest: set WEBHOOK_ENCRYPTION_KEYS to the supervisors' key ring
  ("id:base64key,..." with the current key first) to see sealed bodies and
  to reencrypt every row under the current key.

Exit status: 0 ok, 1 failure, 2 bad usage, 3 no such delivery (or one that
cannot be redelivered), 4 schema not at this webhookctl's version.

Flags:
`

// cli is one invocation's flags and streams.
type cli struct {
	out, errOut io.Writer
	getenv      func(string) string

	databaseURL string
	jsonOut     bool
	tables      webhook.PostgresTables

	// command flags
	state, url, breakerKey, task, ntype, tenant, since, until string
	limit, batch                                              int
	after                                                     string
	dryRun                                                    bool
	olderThan                                                 time.Duration
	before                                                    string
	exact, all                                                bool
}

// usageError is bad usage: exit status 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func badUsage(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

// exitError carries an exit status other than 1.
type exitError struct {
	code int
	err  error
}

func (e exitError) Error() string { return e.err.Error() }
func (e exitError) Unwrap() error { return e.err }

// run is main without the process: it parses args, runs the command and
// returns the exit status.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	c := &cli{out: stdout, errOut: stderr, getenv: getenv}
	fs := c.flags()
	words, err := parseInterleaved(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(stdout, usage)
		fs.SetOutput(stdout)
		fs.PrintDefaults()
		return exitOK
	}
	if err == nil {
		err = c.dispatch(ctx, words)
	}
	return c.exit(err)
}

// exit reports err and maps it to an exit status.
func (c *cli) exit(err error) int {
	var ue usageError
	var ee exitError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ue):
		fmt.Fprintf(c.errOut, "webhookctl: %s\nRun 'webhookctl help' for usage.\n", ue.msg)
		return exitUsage
	case errors.As(err, &ee):
		fmt.Fprintf(c.errOut, "webhookctl: %v\n", ee.err)
		return ee.code
	case errors.Is(err, webhook.ErrSchemaMissing), errors.Is(err, webhook.ErrSchemaNewer):
		fmt.Fprintf(c.errOut, "webhookctl: %v\n", err)
		return exitSchema
	case errors.Is(err, webhook.ErrNotFound), errors.Is(err, webhook.ErrNotFailed), errors.Is(err, webhook.ErrReemitPrepared):
		fmt.Fprintf(c.errOut, "webhookctl: %v\n", err)
		return exitNotFound
	case errors.Is(err, webhook.ErrInvalidWebhook), errors.Is(err, webhook.ErrInvalidConfig):
		fmt.Fprintf(c.errOut, "webhookctl: %v\n", err)
		return exitUsage
	}
	fmt.Fprintf(c.errOut, "webhookctl: %v\n", err)
	return exitFailure
}

func (c *cli) flags() *flag.FlagSet {
	fs := flag.NewFlagSet("webhookctl", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are reported by exit
	fs.StringVar(&c.databaseURL, "database-url", "", "Postgres connection URL (default $DATABASE_URL)")
	fs.BoolVar(&c.jsonOut, "json", false, "print JSON instead of tables")
	fs.StringVar(&c.tables.Deliveries, "deliveries-table", "", "deliveries table name (default "+webhook.DeliveriesTableDefault+")")
	fs.StringVar(&c.tables.Attempts, "attempts-table", "", "attempts table name (default "+webhook.AttemptsTableDefault+")")
	fs.StringVar(&c.tables.Breakers, "breakers-table", "", "breakers table name (default "+webhook.BreakersTableDefault+")")
	fs.StringVar(&c.tables.Sequences, "sequences-table", "", "sequences table name (default "+webhook.SequencesTableDefault+")")
	fs.StringVar(&c.state, "state", "", "filter: delivery state")
	fs.StringVar(&c.url, "url", "", "filter: exact destination URL")
	fs.StringVar(&c.breakerKey, "breaker-key", "", "filter: exact breaker key (the URL unless the seller set one)")
	fs.StringVar(&c.task, "task", "", "filter: task ID")
	fs.StringVar(&c.ntype, "type", "", "filter: notification type")
	fs.StringVar(&c.tenant, "tenant", "", "filter: tenant (Routing.Tenant)")
	fs.StringVar(&c.since, "since", "", "filter: accepted at or after this time (RFC 3339)")
	fs.StringVar(&c.until, "until", "", "filter: accepted before this time (RFC 3339)")
	fs.IntVar(&c.limit, "limit", 0, "deliveries list: page size (default 50); redeliver: most deliveries to redeliver (default all)")
	fs.StringVar(&c.after, "after", "", "deliveries list: the cursor a previous page printed")
	fs.IntVar(&c.batch, "batch", 0, "redeliver, reencrypt: deliveries per batch (default 100, 200)")
	fs.BoolVar(&c.dryRun, "dry-run", false, "redeliver: count what would be redelivered, change nothing")
	fs.DurationVar(&c.olderThan, "older-than", 30*24*time.Hour, "purge: delete deliveries that finished longer ago than this")
	fs.StringVar(&c.before, "before", "", "purge: delete deliveries that finished before this time (RFC 3339)")
	fs.BoolVar(&c.exact, "exact", false, "breakers reset, redeliver: the key or URL given is exact, not the printed form")
	fs.BoolVar(&c.all, "all", false, "breakers reset, redeliver: take every key or URL the printed form names")
	return fs
}

// parseInterleaved parses flags anywhere among the words, and returns the
// words.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var words []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, badUsage("%v", err)
		}
		rest := fs.Args()
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			return append(words, rest...), nil // "--" ends the flags for good
		}
		if len(rest) == 0 {
			return words, nil
		}
		words = append(words, rest[0])
		args = rest[1:]
	}
}

// dispatch runs the command the words name.
func (c *cli) dispatch(ctx context.Context, words []string) error {
	cmd := strings.Join(words[:min(2, len(words))], " ")
	arg := func(n int) (string, error) {
		if len(words) != n+1 {
			return "", badUsage("%s takes %d argument(s)", cmd, n)
		}
		return words[n], nil
	}
	switch {
	case len(words) == 0 || words[0] == "help":
		fmt.Fprint(c.out, usage)
		fs := c.flags()
		fs.SetOutput(c.out)
		fs.PrintDefaults()
		return nil
	case cmd == "schema print":
		if _, err := arg(1); err != nil {
			return err
		}
		ms, err := webhook.PostgresMigrations(c.tables)
		if err != nil {
			return err
		}
		for i, m := range ms {
			if i > 0 {
				fmt.Fprintln(c.out)
			}
			fmt.Fprint(c.out, m.SQL)
		}
		return nil
	}
	var run func(context.Context, *webhook.PostgresSupervisor) error
	switch cmd {
	case "schema migrate", "schema status", "deliveries list", "breakers list":
		if _, err := arg(1); err != nil {
			return err
		}
	case "deliveries show", "breakers reset":
		if _, err := arg(2); err != nil {
			return err
		}
	}
	switch {
	case cmd == "schema migrate":
		run = c.schemaMigrate
	case cmd == "schema status":
		run = c.schemaStatus
	case cmd == "stats":
		if _, err := arg(0); err != nil {
			return err
		}
		run = c.stats
	case cmd == "deliveries list":
		run = c.list
	case cmd == "deliveries show":
		run = func(ctx context.Context, s *webhook.PostgresSupervisor) error { return c.show(ctx, s, words[2]) }
	case words[0] == "redeliver":
		switch len(words) {
		case 1:
			run = c.redeliverMatching
		case 2:
			run = func(ctx context.Context, s *webhook.PostgresSupervisor) error { return c.redeliver(ctx, s, words[1]) }
		default:
			return badUsage("redeliver takes one delivery ID, or filters")
		}
	case cmd == "breakers list":
		run = c.breakers
	case cmd == "breakers reset":
		run = func(ctx context.Context, s *webhook.PostgresSupervisor) error { return c.reset(ctx, s, words[2]) }
	case words[0] == "purge":
		if _, err := arg(0); err != nil {
			return err
		}
		run = c.purge
	case words[0] == "reencrypt":
		if _, err := arg(0); err != nil {
			return err
		}
		run = c.reencrypt
	default:
		return badUsage("unknown command %q", strings.Join(words, " "))
	}
	return c.withSupervisor(ctx, run)
}

// withSupervisor connects and runs f on a supervisor with no Sender.
func (c *cli) withSupervisor(ctx context.Context, f func(context.Context, *webhook.PostgresSupervisor) error) error {
	url := c.databaseURL
	if url == "" {
		url = c.getenv("DATABASE_URL")
	}
	if url == "" {
		return badUsage("no database: set DATABASE_URL or pass --database-url")
	}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		// pgx's message can quote the URL, password and all.
		return badUsage("DATABASE_URL is not a Postgres connection URL or DSN")
	}
	cfg.MaxConns = 4
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("connecting: %w", err)
	}
	defer pool.Close()
	pc := webhook.PostgresConfig{Tables: c.tables, PollOnly: true}
	if ring := c.getenv("WEBHOOK_ENCRYPTION_KEYS"); ring != "" {
		if pc.Encryption, err = webhook.ParseEncryptionKeys(ring); err != nil {
			return badUsage("WEBHOOK_ENCRYPTION_KEYS: %v", err)
		}
	}
	s, err := webhook.NewPostgresSupervisor(pool, nil, pc)
	if err != nil {
		return err
	}
	return f(ctx, s)
}

// emit prints v as JSON when --json is set, else calls table.
func (c *cli) emit(v any, table func(w *tabwriter.Writer)) error {
	if c.jsonOut {
		e := json.NewEncoder(c.out)
		e.SetIndent("", "  ")
		return e.Encode(v)
	}
	w := tabwriter.NewWriter(c.out, 0, 0, 2, ' ', 0)
	table(w)
	return w.Flush()
}

func (c *cli) schemaMigrate(ctx context.Context, s *webhook.PostgresSupervisor) error {
	applied, err := s.Migrate(ctx)
	if err != nil {
		return err
	}
	type migration struct {
		Version int    `json:"version"`
		Name    string `json:"name"`
	}
	out := struct {
		Applied []migration `json:"applied"`
		Version int         `json:"version"`
	}{Applied: []migration{}, Version: webhook.SchemaVersion}
	for _, m := range applied {
		out.Applied = append(out.Applied, migration{m.Version, m.Name})
	}
	return c.emit(out, func(w *tabwriter.Writer) {
		for _, m := range applied {
			fmt.Fprintf(w, "applied\t%d\t%s\n", m.Version, m.Name)
		}
		fmt.Fprintf(w, "schema at version %d\n", webhook.SchemaVersion)
	})
}

func (c *cli) schemaStatus(ctx context.Context, s *webhook.PostgresSupervisor) error {
	v, err := s.SchemaVersion(ctx)
	if err != nil {
		return err
	}
	ms, err := webhook.PostgresMigrations(c.tables)
	if err != nil {
		return err
	}
	type migration struct {
		Version int    `json:"version"`
		Name    string `json:"name"`
		Applied bool   `json:"applied"`
	}
	out := struct {
		Version    int         `json:"version"`
		Expected   int         `json:"expected"`
		Migrations []migration `json:"migrations"`
	}{Version: v, Expected: webhook.SchemaVersion}
	for _, m := range ms {
		out.Migrations = append(out.Migrations, migration{m.Version, m.Name, m.Version <= v})
	}
	err = c.emit(out, func(w *tabwriter.Writer) {
		fmt.Fprintf(w, "database at version %d; this webhookctl expects %d\n", v, webhook.SchemaVersion)
		for _, m := range out.Migrations {
			state := "pending"
			if m.Applied {
				state = "applied"
			}
			fmt.Fprintf(w, "%d\t%s\t%s\n", m.Version, m.Name, state)
		}
	})
	switch {
	case err != nil:
		return err
	case v < webhook.SchemaVersion:
		return exitError{exitSchema, fmt.Errorf("%d migration(s) pending: run `webhookctl schema migrate`", webhook.SchemaVersion-v)}
	case v > webhook.SchemaVersion:
		return exitError{exitSchema, fmt.Errorf("the database is newer than this webhookctl: upgrade it")}
	}
	return nil
}

// statsJSON is Stats as --json prints it.
type statsJSON struct {
	Pending         int64      `json:"pending"`
	Running         int64      `json:"running"`
	Delivered       int64      `json:"delivered"`
	Failed          int64      `json:"failed"`
	Due             int64      `json:"due"`
	OldestDueAt     *time.Time `json:"oldest_due_at"`
	OldestDueAgeSec float64    `json:"oldest_due_age_seconds"`
	OpenBreakers    int64      `json:"open_breakers"`
}

func (c *cli) stats(ctx context.Context, s *webhook.PostgresSupervisor) error {
	st, err := s.Stats(ctx)
	if err != nil {
		return err
	}
	out := statsJSON{Pending: st.Pending, Running: st.Running, Delivered: st.Delivered, Failed: st.Failed,
		Due: st.Due, OldestDueAgeSec: st.OldestDueAge.Seconds(), OpenBreakers: st.OpenBreakers}
	if !st.OldestDueAt.IsZero() {
		out.OldestDueAt = &st.OldestDueAt
	}
	return c.emit(out, func(w *tabwriter.Writer) {
		fmt.Fprintf(w, "pending\t%d\nrunning\t%d\ndelivered\t%d\nfailed\t%d\n", st.Pending, st.Running, st.Delivered, st.Failed)
		fmt.Fprintf(w, "due now\t%d\n", st.Due)
		if out.OldestDueAt != nil {
			fmt.Fprintf(w, "oldest due\t%s ago (%s)\n", st.OldestDueAge.Round(time.Second), st.OldestDueAt.Format(time.RFC3339))
		}
		fmt.Fprintf(w, "open breakers\t%d\n", st.OpenBreakers)
	})
}

// filter is the delivery filter the flags name.
func (c *cli) filter() (webhook.DeliveryFilter, error) {
	f := webhook.DeliveryFilter{State: webhook.DeliveryState(c.state), URL: c.url, BreakerKey: c.breakerKey,
		TaskID: c.task, NotificationType: c.ntype, Tenant: c.tenant}
	for _, t := range []struct {
		flag, v string
		to      *time.Time
	}{{"--since", c.since, &f.AcceptedAfter}, {"--until", c.until, &f.AcceptedBefore}} {
		if t.v == "" {
			continue
		}
		v, err := time.Parse(time.RFC3339, t.v)
		if err != nil {
			return f, badUsage("%s %q is not an RFC 3339 time (2026-12-03T09:00:00Z)", t.flag, t.v)
		}
		*t.to = v
	}
	return f, nil
}

// deliveryJSON is a delivery as --json prints it: no body, URL and breaker
// key in their loggable form.
type deliveryJSON struct {
	ID               string            `json:"id"`
	State            string            `json:"state"`
	URL              string            `json:"url"`
	BreakerKey       string            `json:"breaker_key"`
	IdempotencyKey   string            `json:"idempotency_key"`
	TaskType         string            `json:"task_type,omitempty"`
	TaskID           string            `json:"task_id,omitempty"`
	NotificationType string            `json:"notification_type,omitempty"`
	SubscriberID     string            `json:"subscriber_id,omitempty"`
	Tenant           string            `json:"tenant,omitempty"`
	EncryptionKey    string            `json:"encryption_key,omitempty"`
	SequenceKey      string            `json:"sequence_key,omitempty"`
	Sequence         int64             `json:"sequence,omitempty"`
	Attempts         int               `json:"attempts"`
	LastStatus       int               `json:"last_status,omitempty"`
	LastError        string            `json:"last_error,omitempty"`
	AcceptedAt       time.Time         `json:"accepted_at"`
	FirstAttemptAt   *time.Time        `json:"first_attempt_at,omitempty"`
	NextAttemptAt    *time.Time        `json:"next_attempt_at,omitempty"`
	FinishedAt       *time.Time        `json:"finished_at,omitempty"`
	ReemissionOf     string            `json:"reemission_of,omitempty"`
	ReemittedAs      string            `json:"reemitted_as,omitempty"`
	Body             *json.RawMessage  `json:"body,omitempty"`
	AttemptRecords   []webhook.Attempt `json:"attempt_records,omitempty"`
}

func timeOrNil(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func toJSON(d webhook.Delivery) deliveryJSON {
	return deliveryJSON{ID: d.ID, State: string(d.State), URL: webhook.LoggableURL(d.URL), BreakerKey: webhook.LoggableURL(d.BreakerKey),
		IdempotencyKey: d.IdempotencyKey, TaskType: string(d.TaskType), TaskID: d.TaskID, NotificationType: d.NotificationType,
		SubscriberID: d.SubscriberID, Tenant: d.Tenant, EncryptionKey: d.EncryptionKey, SequenceKey: d.SequenceKey, Sequence: d.Sequence, Attempts: d.Attempts,
		LastStatus: d.LastStatus, LastError: d.LastError, AcceptedAt: d.AcceptedAt, FirstAttemptAt: timeOrNil(d.FirstAttemptAt),
		NextAttemptAt: timeOrNil(d.NextAttemptAt), FinishedAt: timeOrNil(d.FinishedAt), ReemissionOf: d.ReemissionOf, ReemittedAs: d.ReemittedAs}
}

func (c *cli) list(ctx context.Context, s *webhook.PostgresSupervisor) error {
	f, err := c.filter()
	if err != nil {
		return err
	}
	l, err := s.Deliveries(ctx, f, webhook.Page{After: c.after, Limit: c.limit})
	if err != nil {
		return err
	}
	out := struct {
		Deliveries []deliveryJSON `json:"deliveries"`
		Next       string         `json:"next,omitempty"`
	}{Deliveries: []deliveryJSON{}, Next: l.Next}
	for _, d := range l.Deliveries {
		out.Deliveries = append(out.Deliveries, toJSON(d))
	}
	return c.emit(out, func(w *tabwriter.Writer) {
		fmt.Fprintln(w, "ID\tSTATE\tATTEMPTS\tLAST\tTASK\tTYPE\tACCEPTED\tURL")
		for _, d := range out.Deliveries {
			last := "-"
			if d.LastStatus != 0 {
				last = strconv.Itoa(d.LastStatus)
			} else if d.LastError != "" {
				last = "error"
			}
			fmt.Fprintf(w, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\n", d.ID, d.State, d.Attempts, last, dash(d.TaskID),
				dash(d.NotificationType), d.AcceptedAt.Format(time.RFC3339), d.URL)
		}
		if l.Next != "" {
			fmt.Fprintf(w, "more: --after %s\n", l.Next)
		}
	})
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func (c *cli) show(ctx context.Context, s *webhook.PostgresSupervisor, id string) error {
	d, err := s.Delivery(ctx, id)
	if err != nil {
		return err
	}
	as, err := s.Attempts(ctx, id)
	if err != nil {
		return err
	}
	out := toJSON(d)
	pretty := showbody.Pretty(d.Body)
	if json.Valid([]byte(pretty)) {
		raw := json.RawMessage(pretty)
		out.Body = &raw
	}
	out.AttemptRecords = as
	if c.jsonOut {
		return c.emit(out, nil)
	}
	w := tabwriter.NewWriter(c.out, 0, 0, 2, ' ', 0)
	for _, kv := range [][2]string{
		{"id", out.ID}, {"state", out.State}, {"url", out.URL}, {"breaker key", out.BreakerKey},
		{"idempotency key", out.IdempotencyKey}, {"task", strings.TrimSpace(out.TaskType + " " + out.TaskID)},
		{"notification type", out.NotificationType}, {"subscriber", out.SubscriberID},
		{"tenant", out.Tenant},
		{"sequence", seqText(out.SequenceKey, out.Sequence)}, {"attempts", strconv.Itoa(out.Attempts)},
		{"last status", statusText(out.LastStatus)}, {"last error", out.LastError},
		{"accepted", timeText(&out.AcceptedAt)}, {"first attempt", timeText(out.FirstAttemptAt)},
		{"next attempt", timeText(out.NextAttemptAt)}, {"finished", timeText(out.FinishedAt)},
		{"re-emission of", out.ReemissionOf}, {"re-emitted as", out.ReemittedAs},
		{"encryption key", out.EncryptionKey},
	} {
		if kv[1] != "" {
			fmt.Fprintf(w, "%s\t%s\n", kv[0], kv[1])
		}
	}
	if err := w.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(c.out, "\nattempts (%d):\n", len(as))
	w = tabwriter.NewWriter(c.out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "#\tOUTCOME\tSTATUS\tTIME\tAT\tERROR")
	for _, a := range as {
		fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%s\n", a.AttemptNumber, a.Outcome, statusText(a.HTTPStatus),
			a.ResponseTime.Round(time.Millisecond), a.OccurredAt.Format(time.RFC3339), a.Error)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if d.Body == nil && d.EncryptionKey != "" {
		fmt.Fprintf(c.out, "\nbody: encrypted with key %s; set WEBHOOK_ENCRYPTION_KEYS to the supervisors' key ring to see it\n", d.EncryptionKey)
		return nil
	}
	fmt.Fprintf(c.out, "\nbody (%d bytes; secret members redacted):\n%s\n", len(d.Body), pretty)
	return nil
}

func seqText(key string, n int64) string {
	if key == "" {
		return ""
	}
	return key + " #" + strconv.FormatInt(n, 10)
}

func statusText(n int) string {
	if n == 0 {
		return "-"
	}
	return strconv.Itoa(n)
}

func timeText(t *time.Time) string {
	if t == nil || t.IsZero() {
		return ""
	}
	return t.Format(time.RFC3339Nano)
}

// receiptJSON is a redelivery's receipt as --json prints it.
type receiptJSON struct {
	ID             string `json:"id"`
	IdempotencyKey string `json:"idempotency_key"`
	Sequence       int64  `json:"sequence,omitempty"`
	ReemissionOf   string `json:"reemission_of,omitempty"`
}

func (c *cli) redeliver(ctx context.Context, s *webhook.PostgresSupervisor, id string) error {
	if c.dryRun || c.anyFilter() {
		return badUsage("redeliver ID takes no filters or --dry-run; to select by filter, leave the ID out")
	}
	r, err := s.Redeliver(ctx, id)
	if err != nil {
		return err
	}
	return c.emit(receiptJSON(r), func(w *tabwriter.Writer) {
		if r.ReemissionOf == id {
			fmt.Fprintf(w, "re-emitted %s as %s under a fresh key %s (past its retry horizon, or the receiver answered 409)\n", id, r.ID, r.IdempotencyKey)
			return
		}
		fmt.Fprintf(w, "redelivered %s under its key %s; the workers will send it\n", id, r.IdempotencyKey)
	})
}

func (c *cli) anyFilter() bool {
	return c.state != "" || c.url != "" || c.breakerKey != "" || c.task != "" || c.ntype != "" || c.tenant != "" || c.since != "" || c.until != ""
}

func (c *cli) redeliverMatching(ctx context.Context, s *webhook.PostgresSupervisor) error {
	if c.url == "" && c.breakerKey == "" && c.task == "" && c.ntype == "" && c.tenant == "" && c.since == "" && c.until == "" {
		return badUsage("redeliver needs a delivery ID or at least one filter that narrows it (--breaker-key, --url, --task, --type, --tenant, --since, --until; --state failed is implied)")
	}
	f, err := c.filter()
	if err != nil {
		return err
	}
	// --breaker-key and --url take the printed form too: it names every
	// failed delivery whose key or URL prints so.
	keys, err := c.printedAs(ctx, s, "--breaker-key", f.BreakerKey, func(d *webhook.Delivery) string { return d.BreakerKey })
	if err != nil {
		return err
	}
	urls, err := c.printedAs(ctx, s, "--url", f.URL, func(d *webhook.Delivery) string { return d.URL })
	if err != nil {
		return err
	}
	var res webhook.BulkResult
	for _, k := range keys {
		for _, u := range urls {
			f.BreakerKey, f.URL = k, u
			o := webhook.BulkOptions{DryRun: c.dryRun, Limit: c.limit, BatchSize: c.batch}
			if c.limit > 0 {
				if o.Limit = c.limit - res.Matched; o.Limit <= 0 {
					break
				}
			}
			r, rerr := s.RedeliverMatching(ctx, f, o)
			res.Matched, res.Redelivered, res.Reemitted, res.Skipped = res.Matched+r.Matched, res.Redelivered+r.Redelivered, res.Reemitted+r.Reemitted, res.Skipped+r.Skipped
			res.Receipts = append(res.Receipts, r.Receipts...)
			if err = rerr; err != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	if err != nil && res.Matched == 0 {
		return err
	}
	out := struct {
		DryRun      bool          `json:"dry_run"`
		Matched     int           `json:"matched"`
		Redelivered int           `json:"redelivered"`
		Reemitted   int           `json:"reemitted"`
		Skipped     int           `json:"skipped"`
		Receipts    []receiptJSON `json:"receipts"`
		Error       string        `json:"error,omitempty"`
	}{DryRun: c.dryRun, Matched: res.Matched, Redelivered: res.Redelivered, Reemitted: res.Reemitted, Skipped: res.Skipped,
		Receipts: []receiptJSON{}}
	for _, r := range res.Receipts {
		out.Receipts = append(out.Receipts, receiptJSON(r))
	}
	if err != nil {
		out.Error = err.Error()
	}
	if e := c.emit(out, func(w *tabwriter.Writer) {
		verb := "redelivered"
		if c.dryRun {
			verb = "would redeliver"
		}
		fmt.Fprintf(w, "matched\t%d failed deliveries\n%s\t%d under their own keys\n", res.Matched, verb, res.Redelivered)
		fmt.Fprintf(w, "re-emitted\t%d under fresh keys (past the horizon, or after a 409)\n", res.Reemitted)
		if res.Skipped > 0 {
			fmt.Fprintf(w, "skipped\t%d (prepared bodies past their horizon, or redelivered meanwhile)\n", res.Skipped)
		}
	}); e != nil {
		return e
	}
	return err // a partial run still fails
}

// printedAs returns the values of field that v names among failed
// deliveries: v exactly, or the values that print as v
// ([webhook.LoggableURL]). When several do, it takes them all only with
// --all (and only v with --exact). It reads every failed delivery once.
func (c *cli) printedAs(ctx context.Context, s *webhook.PostgresSupervisor, flag, v string, field func(*webhook.Delivery) string) ([]string, error) {
	if v == "" || c.exact {
		return []string{v}, nil
	}
	seen := map[string]bool{}
	var out []string
	for p := (webhook.Page{Limit: webhook.PageLimitMax}); ; {
		l, err := s.Deliveries(ctx, webhook.DeliveryFilter{State: webhook.StateFailed}, p)
		if err != nil {
			return nil, err
		}
		for i := range l.Deliveries {
			if k := field(&l.Deliveries[i]); !seen[k] && (k == v || webhook.LoggableURL(k) == v) {
				seen[k] = true
				out = append(out, k)
			}
		}
		if l.Next == "" {
			break
		}
		p.After = l.Next
	}
	switch {
	case len(out) == 0:
		return []string{v}, nil
	case len(out) > 1 && !c.all:
		return nil, badUsage("%s %s names %d values among failed deliveries that differ only in what is hidden (a query, a token): pass --all to take them all, or --exact for exactly this one", flag, webhook.LoggableURL(v), len(out))
	}
	return out, nil
}

// breakerJSON is a breaker as --json prints it.
type breakerJSON struct {
	Key      string     `json:"key"`
	State    string     `json:"state"`
	Failures int        `json:"failures"`
	OpenedAt *time.Time `json:"opened_at,omitempty"`
	ProbeAt  *time.Time `json:"probe_at,omitempty"`
	// The endpoint's run of failures since its last 2xx.
	FailingSince     *time.Time `json:"failing_since,omitempty"`
	FailedDeliveries int        `json:"failed_deliveries"`
	Failing          bool       `json:"failing"`
}

func (c *cli) breakers(ctx context.Context, s *webhook.PostgresSupervisor) error {
	all, more, err := opsutil.AllBreakers(ctx, s)
	if err != nil {
		return err
	}
	out := struct {
		Breakers  []breakerJSON `json:"breakers"`
		Truncated bool          `json:"truncated,omitempty"`
	}{Breakers: []breakerJSON{}, Truncated: more}
	for _, b := range all {
		out.Breakers = append(out.Breakers, breakerJSON{Key: webhook.LoggableURL(b.Key), State: b.State.String(),
			Failures: b.Failures, OpenedAt: timeOrNil(b.OpenedAt), ProbeAt: timeOrNil(b.ProbeAt),
			FailingSince: timeOrNil(b.FailingSince), FailedDeliveries: b.FailedDeliveries, Failing: b.Failing})
	}
	return c.emit(out, func(w *tabwriter.Writer) {
		fmt.Fprintln(w, "KEY\tSTATE\tFAILURES\tOPENED\tPROBE AT\tFAILING SINCE\tFAILED DELIVERIES")
		for _, b := range out.Breakers {
			since := dash(timeText(b.FailingSince))
			if b.Failing {
				since += " (failing)"
			}
			fmt.Fprintf(w, "%s\t%s\t%d\t%s\t%s\t%s\t%d\n", b.Key, b.State, b.Failures, dash(timeText(b.OpenedAt)), dash(timeText(b.ProbeAt)),
				since, b.FailedDeliveries)
		}
		if more {
			fmt.Fprintf(w, "(only the first %d shown)\n", len(out.Breakers))
		}
	})
}

// reset resets the breaker key names: its exact key, or the form
// breakers list prints (which hides URL queries and token-shaped path
// segments). Several breakers can print alike: then --all resets them all,
// and --exact takes KEY as the exact key.
func (c *cli) reset(ctx context.Context, s *webhook.PostgresSupervisor, key string) error {
	keys, exact, truncated, err := opsutil.MatchBreakers(ctx, s, key)
	if err != nil {
		return err
	}
	targets := keys
	switch {
	case c.exact && (exact || truncated):
		targets = []string{key}
	case len(keys) == 0 && truncated:
		return exitError{exitNotFound, fmt.Errorf("no breaker among the first %d named %s; pass --exact with the full key", opsutil.MaxBreakers, webhook.LoggableURL(key))}
	case len(keys) == 0 || c.exact:
		return exitError{exitNotFound, fmt.Errorf("no breaker named %s is open, half-open or counting failures (breakers list shows those)", webhook.LoggableURL(key))}
	case len(keys) > 1 && !c.all:
		return badUsage("%s names %d breakers whose keys differ only in what is hidden (a query, a token): pass --all to reset them all, or --exact with the full key", webhook.LoggableURL(key), len(keys))
	}
	for _, k := range targets {
		if err := s.ResetBreaker(ctx, k); err != nil {
			return err
		}
	}
	out := struct {
		Key   string `json:"key"`
		Reset int    `json:"reset"`
	}{webhook.LoggableURL(key), len(targets)}
	return c.emit(out, func(w *tabwriter.Writer) {
		fmt.Fprintf(w, "reset %s (%d breaker(s)): closed; their pending deliveries are due now\n", out.Key, out.Reset)
	})
}

func (c *cli) purge(ctx context.Context, s *webhook.PostgresSupervisor) error {
	cutoff := time.Now().Add(-c.olderThan)
	if c.before != "" {
		t, err := time.Parse(time.RFC3339, c.before)
		if err != nil {
			return badUsage("--before %q is not an RFC 3339 time (2026-12-03T09:00:00Z)", c.before)
		}
		cutoff = t
	}
	if c.olderThan < 0 {
		return badUsage("--older-than is negative")
	}
	n, err := s.Purge(ctx, cutoff)
	if err != nil {
		return err
	}
	out := struct {
		Before time.Time `json:"before"`
		Purged int64     `json:"purged"`
	}{cutoff.UTC(), n}
	return c.emit(out, func(w *tabwriter.Writer) {
		fmt.Fprintf(w, "purged %d finished deliveries (finished before %s)\n", n, out.Before.Format(time.RFC3339))
	})
}

func (c *cli) reencrypt(ctx context.Context, s *webhook.PostgresSupervisor) error {
	if c.getenv("WEBHOOK_ENCRYPTION_KEYS") == "" {
		return badUsage("reencrypt needs the key ring: set WEBHOOK_ENCRYPTION_KEYS (\"id:base64key,...\", the current key first)")
	}
	res, err := s.Reencrypt(ctx, c.batch)
	if err != nil {
		return err
	}
	ring, _ := webhook.ParseEncryptionKeys(c.getenv("WEBHOOK_ENCRYPTION_KEYS"))
	out := struct {
		Key         string   `json:"key"`
		Reencrypted int64    `json:"reencrypted"`
		Batches     int      `json:"batches"`
		Failed      int64    `json:"failed"`
		FailedIDs   []string `json:"failed_ids,omitempty"`
	}{ring.Current(), res.Reencrypted, res.Batches, res.Failed, res.FailedIDs}
	if err := c.emit(out, func(w *tabwriter.Writer) {
		fmt.Fprintf(w, "reencrypted %d deliveries under key %s (%d batches)\n", out.Reencrypted, out.Key, out.Batches)
		if out.Failed > 0 {
			fmt.Fprintf(w, "%d do not decrypt and were left as they are: %s\n", out.Failed, strings.Join(out.FailedIDs, " "))
		}
	}); err != nil {
		return err
	}
	if res.Failed > 0 {
		return fmt.Errorf("%d deliveries do not decrypt with this ring; they fail alone when attempted (see deliveries show)", res.Failed)
	}
	return nil
}
