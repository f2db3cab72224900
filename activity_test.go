package webhook_test

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/adcpkit/webhook"
	"github.com/adcpkit/webhook/internal/schematest"
)

// activitySource is what both supervisors offer for webhook_activity[].
type activitySource interface {
	Activity(ctx context.Context, q webhook.ActivityQuery) ([]webhook.ActivityRecord, error)
}

// checkActivity validates records against the spec's schema, and that
// the members the schema wants as explicit nulls are present.
func checkActivity(t *testing.T, rs []webhook.ActivityRecord) []map[string]any {
	t.Helper()
	set, err := schematest.Load("testdata/schemas/webhook-activity-record.json", "testdata/schemas/notification-type.json")
	require.NoError(t, err)
	var out []map[string]any
	for _, r := range rs {
		doc, err := json.Marshal(r)
		require.NoError(t, err)
		res, err := set.Validate("webhook-activity-record.json", doc)
		require.NoError(t, err)
		require.Empty(t, res.Errors, string(doc))
		require.Empty(t, res.Unresolved, "every ref reached was checked")
		var m map[string]any
		require.NoError(t, json.Unmarshal(doc, &m))
		for _, k := range []string{"completed_at", "http_status_code", "response_time_ms", "error_message"} {
			require.Contains(t, m, k, "%s is explicit, null or not", k)
		}
		out = append(out, m)
	}
	return out
}

// runActivitySuite: AdCP's webhook_activity[] records, one per attempt,
// telling a timeout from a connection error.
func runActivitySuite(t *testing.T, newSup newSupervisorFunc) {
	t.Run("OnePerAttemptNewestFirst", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, newSup, func(c *suiteConfig) {
			c.Retry.MaxAttempts, c.Retry.BaseDelay, c.Retry.MaxDelay = 5, time.Second, time.Second
			c.Breaker.FailureThreshold = 100
		})
		src := e.sup.(activitySource)
		url := "https://buyer.example/hooks/a1b2c3d4e5f6a7b8c9d0/creative?token=s3cr3t-value-123"
		e.sender.on(url, step{status: 503}, step{err: context.DeadlineExceeded},
			step{err: &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}}, step{status: 200})
		e.startWorker()
		body := `{"idempotency_key":"evt_creative_000001","notification_id":"cr_9.status.2","creative_id":"cr_9"}`
		r, err := e.sup.SendPrepared(context.Background(), webhook.PreparedWebhook{URL: url, Body: []byte(body),
			IdempotencyKey: "evt_creative_000001", TaskID: "cr_9",
			Routing: webhook.Routing{NotificationType: "creative.status_changed", SubscriberID: "sub_42"}})
		require.NoError(t, err)
		as := e.deliverAll(1)
		require.Len(t, as, 4)

		rs, err := src.Activity(context.Background(), webhook.ActivityQuery{DeliveryID: r.ID})
		require.NoError(t, err)
		docs := checkActivity(t, rs)
		require.Len(t, rs, 4)
		var statuses []webhook.ActivityStatus
		for i, rec := range rs {
			statuses = append(statuses, rec.Status)
			require.Equal(t, 4-i, rec.Attempt, "newest first")
			require.Equal(t, "evt_creative_000001", rec.IdempotencyKey)
			require.Equal(t, "cr_9.status.2", rec.NotificationID, "copied from the payload")
			require.Equal(t, "sub_42", rec.SubscriberID)
			require.Equal(t, "creative.status_changed", rec.NotificationType)
			require.Equal(t, len(body), rec.PayloadSizeBytes)
			require.Equal(t, "https://buyer.example/hooks/redacted/creative", rec.URL, "no query, no token-shaped segment")
			require.Equal(t, as[3-i].OccurredAt, rec.FiredAt)
			require.NotNil(t, rec.CompletedAt)
		}
		require.Equal(t, []webhook.ActivityStatus{webhook.ActivitySuccess, webhook.ActivityConnectionError, webhook.ActivityTimeout, webhook.ActivityFailed}, statuses)
		require.Nil(t, docs[0]["error_message"], "null on success")
		require.Equal(t, 200.0, docs[0]["http_status_code"])
		require.Nil(t, docs[1]["http_status_code"], "no response")
		require.Nil(t, docs[2]["response_time_ms"], "no response")
		require.Equal(t, 503.0, docs[3]["http_status_code"])
		require.Equal(t, "HTTP 503 Service Unavailable", docs[3]["error_message"])
		for _, d := range docs {
			require.NotContains(t, d["url"], "s3cr3t")
			if msg, ok := d["error_message"].(string); ok {
				require.NotContains(t, msg, "s3cr3t")
			}
		}

		// The same records by task and by subscriber, and limited.
		for _, q := range []webhook.ActivityQuery{{TaskID: "cr_9"}, {SubscriberID: "sub_42"}, {TaskID: "cr_9", SubscriberID: "sub_42"}} {
			got, err := src.Activity(context.Background(), q)
			require.NoError(t, err)
			require.Equal(t, rs, got, "%+v", q)
		}
		got, err := src.Activity(context.Background(), webhook.ActivityQuery{SubscriberID: "sub_42", Limit: 2})
		require.NoError(t, err)
		require.Equal(t, rs[:2], got)
		got, err = src.Activity(context.Background(), webhook.ActivityQuery{SubscriberID: "sub_other"})
		require.NoError(t, err)
		require.Empty(t, got)
	})

	t.Run("AQueuedAttemptIsPending", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, newSup)
		src := e.sup.(activitySource)
		w := report("https://buyer.example/reporting", "mb_1", 0)
		w.SubscriberID = "sub_7"
		r := e.sendMCP(w) // no worker runs: queued
		rs, err := src.Activity(context.Background(), webhook.ActivityQuery{DeliveryID: r.ID})
		require.NoError(t, err)
		docs := checkActivity(t, rs)
		require.Len(t, rs, 1)
		require.Equal(t, webhook.ActivityPending, rs[0].Status)
		require.Equal(t, 1, rs[0].Attempt)
		require.Equal(t, int64(1), rs[0].SequenceNumber)
		require.Empty(t, rs[0].NotificationID, "delivery reports carry none")
		require.Equal(t, epoch, rs[0].FiredAt, "due now")
		for _, k := range []string{"completed_at", "http_status_code", "response_time_ms", "error_message"} {
			require.Nil(t, docs[0][k], k)
		}
		got, err := src.Activity(context.Background(), webhook.ActivityQuery{TaskID: w.TaskID})
		require.NoError(t, err)
		require.Equal(t, rs, got)

		// A task webhook has no notification type: no records.
		task := e.sendMCP(mcp("https://buyer.example/hook", "t1"))
		got, err = src.Activity(context.Background(), webhook.ActivityQuery{DeliveryID: task.ID})
		require.NoError(t, err)
		require.Empty(t, got)
	})

	// A redelivery within the horizon restarts the retry allowance, not
	// the count of attempts under the key; a limit keeps the newest
	// records, pending ones included, and an empty answer is [].
	t.Run("NumberingAcrossRedeliveryAndLimits", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, newSup, func(c *suiteConfig) { c.Retry.MaxAttempts = 1 })
		src := e.sup.(activitySource)
		ctx := context.Background()
		url := "https://buyer.example/reporting"
		e.sender.on(url, step{status: 400})
		e.startWorker()
		w := report(url, "mb_1", 0)
		r := e.sendMCP(w)
		e.attempts(1)
		e.settled(r.ID)
		e.clock.Advance(time.Hour)
		_, err := e.sup.(redeliverer).Redeliver(ctx, r.ID)
		require.NoError(t, err)
		e.attempts(1)
		e.settled(r.ID)
		rs, err := src.Activity(ctx, webhook.ActivityQuery{DeliveryID: r.ID})
		require.NoError(t, err)
		require.Len(t, rs, 2)
		require.Equal(t, []int{2, 1}, []int{rs[0].Attempt, rs[1].Attempt}, "one count per key, newest first")
		require.Equal(t, []webhook.ActivityStatus{webhook.ActivitySuccess, webhook.ActivityFailed}, []webhook.ActivityStatus{rs[0].Status, rs[1].Status})

		none, err := src.Activity(ctx, webhook.ActivityQuery{SubscriberID: "nobody"})
		require.NoError(t, err)
		doc, err := json.Marshal(map[string]any{"webhook_activity": none})
		require.NoError(t, err)
		require.JSONEq(t, `{"webhook_activity":[]}`, string(doc), "empty, not null")
		none, err = src.Activity(ctx, webhook.ActivityQuery{DeliveryID: "no-such-id"})
		require.NoError(t, err)
		require.NotNil(t, none)
		require.Empty(t, none)
	})

	t.Run("ALimitKeepsTheNewestPending", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, newSup, func(c *suiteConfig) { c.Retry.BaseDelay, c.Retry.MaxDelay = time.Hour, time.Hour })
		src := e.sup.(activitySource)
		url := "https://buyer.example/reporting"
		e.sender.on(url, step{status: 503})
		e.startWorker()
		r := e.sendMCP(report(url, "mb_1", 0))
		a := e.attempts(1)[0]
		require.True(t, a.WillRetry)
		rs, err := src.Activity(context.Background(), webhook.ActivityQuery{TaskID: "report_mb_1", Limit: 1})
		require.NoError(t, err)
		require.Len(t, rs, 1)
		require.Equal(t, webhook.ActivityPending, rs[0].Status, "the queued retry, due after the failed attempt, is the newest")
		require.Equal(t, 2, rs[0].Attempt)
		require.Equal(t, a.NextRetryAt, rs[0].FiredAt)
		all, err := src.Activity(context.Background(), webhook.ActivityQuery{DeliveryID: r.ID})
		require.NoError(t, err)
		require.Len(t, all, 2)
		require.Equal(t, rs[0], all[0])
	})

	t.Run("QueriesAreChecked", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, newSup)
		src := e.sup.(activitySource)
		for _, q := range []webhook.ActivityQuery{{}, {TaskID: "t", Limit: 201}, {TaskID: "t", Limit: -1}} {
			_, err := src.Activity(context.Background(), q)
			var ve *webhook.ValidationError
			require.ErrorAs(t, err, &ve, "%+v", q)
			require.True(t, ve.Field == "ActivityQuery" || ve.Field == "Limit")
			require.True(t, strings.Contains(err.Error(), "200") || strings.Contains(err.Error(), "DeliveryID"))
		}
	})
}

func TestMemoryActivity(t *testing.T) {
	t.Parallel()
	runActivitySuite(t, newMemory)
}

func TestPostgresActivity(t *testing.T) {
	t.Parallel()
	runActivitySuite(t, newPostgres)
}
