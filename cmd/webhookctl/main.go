// Command webhookctl is the operator's CLI for a PostgresSupervisor's
// tables: schema migrations, queue statistics, delivery lists and details,
// redelivery (one delivery, or every failed one a filter selects), circuit
// breakers and purging. It connects with DATABASE_URL (or --database-url)
// and sends nothing itself: redelivered webhooks are sent by the
// deployment's own workers.
//
// Usage:
//
//	webhookctl [flags] schema print | migrate | status
//	webhookctl [flags] stats
//	webhookctl [flags] deliveries list [filters] [--limit N] [--after CURSOR]
//	webhookctl [flags] deliveries show ID
//	webhookctl [flags] redeliver ID
//	webhookctl [flags] redeliver [filters] [--dry-run] [--limit N] [--batch N]
//	webhookctl [flags] breakers list
//	webhookctl [flags] breakers reset KEY
//	webhookctl [flags] purge [--older-than 720h | --before TIME]
//	webhookctl [flags] reencrypt [--batch N]
//
// With encryption at rest (webhook.PostgresConfig.Encryption), set
// WEBHOOK_ENCRYPTION_KEYS to the supervisors' key ring ("id:base64key,...",
// the current key first; never a flag, which other users can read) to see
// bodies and to run reencrypt, which rewrites every row under the current
// key in small batches while workers run.
//
// Filters: --state, --url, --breaker-key, --task, --type, --tenant, --since, --until
// (times in RFC 3339). Flags may come before or after the command. Every
// read command takes --json. Credentials, header values and URL queries
// are never printed; secret members of bodies are shown as <redacted>.
//
// Exit status: 0 success; 1 failure (the database, say); 2 bad usage; 3 no
// such delivery, or a delivery that cannot be redelivered; 4 the schema is
// not the version this webhookctl expects (run `webhookctl schema
// migrate`, or upgrade webhookctl).
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
