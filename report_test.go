package webhook_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/adcpkit/webhook"
	"github.com/adcpkit/webhook/internal/schematest"
)

// reportSchemas are the envelope and the delivery-report result.
func reportSchemas(t *testing.T) *schematest.Set {
	t.Helper()
	set, err := schematest.Load("testdata/mcp-webhook-payload.schema.json", "testdata/enum-task-status.json",
		"testdata/enum-task-type.json", "testdata/enum-adcp-protocol.json",
		"testdata/schemas/media-buy-delivery-webhook-result.json", "testdata/schemas/notification-type.json")
	require.NoError(t, err)
	return set
}

// checkReport validates one delivery report body against the spec's
// schemas and returns its result's sequence_number.
func checkReport(t *testing.T, set *schematest.Set, body []byte) int64 {
	t.Helper()
	r, err := set.Validate("mcp-webhook-payload.json", body)
	require.NoError(t, err)
	require.Empty(t, r.Errors, string(body))
	var env struct {
		NotificationID *string         `json:"notification_id"`
		Result         json.RawMessage `json:"result"`
	}
	require.NoError(t, json.Unmarshal(body, &env))
	require.Nil(t, env.NotificationID, "a delivery report carries no notification_id")
	r, err = set.Validate("media-buy-delivery-webhook-result.json", env.Result)
	require.NoError(t, err)
	require.Empty(t, r.Errors, string(env.Result))
	// The delivery rows' metrics schema is not in the spec snapshot: only
	// the totals' "spend" requirement beside it is checked.
	require.Equal(t, []string{"/schemas/core/delivery-metrics.json"}, r.Unresolved)
	var res struct {
		SequenceNumber int64 `json:"sequence_number"`
	}
	require.NoError(t, json.Unmarshal(env.Result, &res))
	return res.SequenceNumber
}

// report is a scheduled delivery report on media buy mb's reporting stream.
func report(url, mb string, period int) webhook.MCPWebhook {
	start := epoch.Add(time.Duration(period) * time.Hour)
	return webhook.MCPWebhook{
		URL: url, OperationID: "op_report_" + mb, TaskID: "report_" + mb, TaskType: webhook.TaskMediaBuyDelivery,
		Status: webhook.StatusCompleted, Timestamp: start.Add(time.Hour), WriteSequenceNumber: true,
		IdempotencyKey: fmt.Sprintf("rpt_%s_%08d", mb, period),
		Result: json.RawMessage(fmt.Sprintf(`{"notification_type":"scheduled","reporting_period":{"start":%q,"end":%q},"currency":"USD",`+
			`"media_buy_deliveries":[{"media_buy_id":%q,"status":"active","totals":{"impressions":%d,"spend":%d.5},"by_package":[]}]}`,
			start.Format(time.RFC3339), start.Add(time.Hour).Format(time.RFC3339), mb, 1000*period, 10*period)),
		Routing: webhook.Routing{SequenceKey: mb + "/reporting", NotificationType: "scheduled",
			// Reporting webhooks in AdCP 3.x are authenticated with the
			// buyer's legacy HMAC secret (or Bearer token).
			Authentication: &webhook.Authentication{Scheme: webhook.AuthHMACSHA256, Credentials: goodCredentials}},
	}
}

// runReportSuite: delivery reports carry the supervisor's sequence number
// in their result, drawn at acceptance.
func runReportSuite(t *testing.T, newSup newSupervisorFunc) {
	t.Run("TheSequenceNumberIsWrittenIntoTheReport", func(t *testing.T) {
		t.Parallel()
		set := reportSchemas(t)
		e := newEnv(t, newSup)
		url := "https://buyer.example/reporting"
		var rs []webhook.Receipt
		for p := range 3 {
			rs = append(rs, e.sendMCP(report(url, "mb_1", p)))
		}
		other := e.sendMCP(report(url, "mb_2", 0))
		require.Equal(t, int64(1), other.Sequence, "each stream counts from 1")
		again := e.sendMCP(report(url, "mb_1", 1))
		require.Equal(t, rs[1], again, "the same report again: its delivery, no new number")
		e.startWorker()
		e.attempts(4)
		sent := e.sender.sent()
		require.Len(t, sent, 4)
		got := map[string]int64{}
		for _, s := range sent {
			got[s.Key] = checkReport(t, set, s.Body)
			require.Equal(t, webhook.AuthHMACSHA256, s.Auth.Scheme)
		}
		for i, r := range rs {
			require.Equal(t, int64(i+1), r.Sequence)
			require.Equal(t, r.Sequence, got[r.IdempotencyKey], "the body carries the receipt's number")
		}
		require.Equal(t, int64(1), got[other.IdempotencyKey])
	})

	t.Run("WriteSequenceNumberNeedsAnObjectAndAStream", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, newSup)
		ctx := context.Background()
		for field, mutate := range map[string]func(*webhook.MCPWebhook){
			"WriteSequenceNumber": func(w *webhook.MCPWebhook) { w.SequenceKey = "" },
			"Result":              func(w *webhook.MCPWebhook) { w.Result = json.RawMessage(`[1,2]`) },
		} {
			w := report("https://buyer.example/reporting", "mb_1", 0)
			mutate(&w)
			_, err := e.sup.SendMCP(ctx, w)
			var ve *webhook.ValidationError
			require.ErrorAs(t, err, &ve, field)
			require.Equal(t, field, ve.Field)
		}
		w := report("https://buyer.example/reporting", "mb_1", 0)
		w.Result = json.RawMessage(`{"sequence_number":7,"notification_type":"scheduled"}`)
		_, err := e.sup.SendMCP(ctx, w)
		require.ErrorContains(t, err, "has a sequence_number")
		w = report("https://buyer.example/reporting", "mb_1", 0)
		w.Result = json.RawMessage(` { } `)
		r := e.sendMCP(w) // the smallest object: the number is its only member
		require.Equal(t, int64(1), r.Sequence)
		e.startWorker()
		e.attempts(1)
		var res map[string]any
		require.NoError(t, json.Unmarshal(e.sender.sent()[0].Body, &struct {
			Result *map[string]any `json:"result"`
		}{&res}))
		require.Equal(t, map[string]any{"sequence_number": 1.0}, res)
	})
}

func TestMemoryReports(t *testing.T) {
	t.Parallel()
	runReportSuite(t, newMemory)
}

func TestPostgresReports(t *testing.T) {
	t.Parallel()
	runReportSuite(t, newPostgres)
}

func TestBuildMCPBodyRefusesWriteSequenceNumber(t *testing.T) {
	t.Parallel()
	_, _, err := webhook.BuildMCPBody(report("https://buyer.example/reporting", "mb_1", 0), epoch)
	var ve *webhook.ValidationError
	require.ErrorAs(t, err, &ve)
	require.Equal(t, "WriteSequenceNumber", ve.Field)
}

// Reports accepted concurrently, from the pool and inside transactions,
// are numbered 1..n with no gaps, each body carrying its row's number.
func TestPostgresReportsAreContiguousUnderConcurrency(t *testing.T) {
	t.Parallel()
	pe := newPgEnv(t, webhook.PostgresConfig{})
	set := reportSchemas(t)
	ctx := context.Background()
	const n = 24
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			w := report("https://buyer.example/reporting", "mb_1", i)
			if i%3 != 0 {
				_, err := pe.pg.SendMCP(ctx, w)
				errs <- err
				return
			}
			errs <- pgx.BeginFunc(ctx, pe.pool, func(tx pgx.Tx) error {
				_, err := pe.pg.SendMCPTx(ctx, tx, w)
				return err
			})
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	type row struct {
		Seq  int64  `db:"sequence_number"`
		Body []byte `db:"body"`
	}
	rows, err := pe.pool.Query(ctx, `SELECT sequence_number, body FROM adcp_webhook_deliveries`)
	require.NoError(t, err)
	got, err := pgx.CollectRows(rows, pgx.RowToStructByName[row])
	require.NoError(t, err)
	var nums []int64
	for _, r := range got {
		require.Equal(t, r.Seq, checkReport(t, set, r.Body))
		nums = append(nums, r.Seq)
	}
	slices.Sort(nums)
	want := make([]int64, n)
	for i := range want {
		want[i] = int64(i + 1)
	}
	require.Equal(t, want, nums)
}
