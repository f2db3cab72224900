package webhook

import (
	"bytes"
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/adcpkit/webhook/internal/ident"
	"github.com/adcpkit/webhook/internal/strictjson"
	"github.com/stretchr/testify/require"
)

var at = time.Date(2025, 1, 22, 10, 30, 0, 0, time.UTC)

func TestBuildMCPBodyExactBytes(t *testing.T) {
	t.Parallel()
	body, key, err := BuildMCPBody(MCPWebhook{
		URL:            "https://buyer.example/hook",
		OperationID:    "op_456",
		TaskID:         "task_456",
		TaskType:       TaskCreateMediaBuy,
		Status:         StatusCompleted,
		Message:        "Media buy <created> & ready",
		ContextID:      "ctx_abc123",
		Token:          "tok_0123456789abcdef",
		IdempotencyKey: "whk_01HW9D3H8FZP2N6R8T0V4X6Z9B",
		Result:         map[string]any{"media_buy_id": "mb_12345", "url": "https://x.example/?a=1&b=<2>"},
	}, at)
	require.NoError(t, err)
	require.Equal(t, "whk_01HW9D3H8FZP2N6R8T0V4X6Z9B", key)
	require.Equal(t, `{"idempotency_key":"whk_01HW9D3H8FZP2N6R8T0V4X6Z9B","notification_id":"task_456.terminal",`+
		`"operation_id":"op_456","task_id":"task_456","task_type":"create_media_buy","protocol":"media-buy",`+
		`"status":"completed","timestamp":"2025-01-22T10:30:00.000Z","message":"Media buy <created> & ready",`+
		`"context_id":"ctx_abc123","token":"tok_0123456789abcdef",`+
		`"result":{"media_buy_id":"mb_12345","url":"https://x.example/?a=1&b=<2>"}}`, string(body))
}

func TestBuildMCPBodyMinimal(t *testing.T) {
	t.Parallel()
	local := time.FixedZone("X", 5*3600)
	body, key, err := BuildMCPBody(MCPWebhook{
		OperationID: "op_1",
		TaskID:      "task_1",
		TaskType:    "some_future_task",
		Status:      StatusWorking,
		Timestamp:   time.Date(2025, 1, 22, 15, 30, 0, 123456789, local),
	}, at)
	require.NoError(t, err)
	require.Equal(t, `{"idempotency_key":"`+key+`","operation_id":"op_1","task_id":"task_1",`+
		`"task_type":"some_future_task","status":"working","timestamp":"2025-01-22T10:30:00.123Z"}`, string(body),
		"unknown task types have no protocol; non-terminal statuses no notification_id; timestamps are UTC")
}

func TestBuildMCPBodyRawResultVerbatim(t *testing.T) {
	t.Parallel()
	raw := json.RawMessage("{ \"b\": 1,\n  \"a\": \"<x>\" }")
	body, _, err := BuildMCPBody(MCPWebhook{OperationID: "op", TaskID: "t", TaskType: TaskGetSignals,
		Status: StatusCompleted, Result: raw, NotificationID: "custom:id"}, at)
	require.NoError(t, err)
	require.True(t, strings.HasSuffix(string(body), `,"result":`+string(raw)+`}`), string(body))
	require.Contains(t, string(body), `"notification_id":"custom:id"`)
	require.Contains(t, string(body), `"protocol":"signals"`)
	require.True(t, json.Valid(body))
}

func TestIdempotencyKeysAreUUID4(t *testing.T) {
	t.Parallel()
	re := regexp.MustCompile(`^whk_[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	seen := map[string]bool{}
	for range 1000 {
		k := NewIdempotencyKey()
		require.Regexp(t, re, k)
		require.True(t, ident.Valid(k, 16, 255))
		require.False(t, seen[k])
		seen[k] = true
	}
}

// TestEnumsMatchSpec checks the constants against the AdCP enum files copied

// into testdata (see testdata/README.md).

// TestBodyMatchesSchema checks built bodies against the parts of the AdCP

// schema that a hand-written check can hold: required members, known

// members only, and the members' patterns and lengths.

func TestBodyMatchesSchema(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile("testdata/mcp-webhook-payload.schema.json")
	require.NoError(t, err)
	var schema struct {
		Required   []string
		Properties map[string]struct {
			Pattern   string
			MinLength int
			MaxLength int
		}
	}
	require.NoError(t, json.Unmarshal(raw, &schema))
	for _, status := range []Status{StatusCompleted, StatusWorking, StatusInputRequired} {
		body, _, err := BuildMCPBody(MCPWebhook{OperationID: "op_1", TaskID: "task_1", TaskType: TaskSyncCreatives,
			Status: status, Message: "m", ContextID: "c", Token: strings.Repeat("k", 16), Result: []int{1}}, at)
		require.NoError(t, err)
		var doc map[string]any
		require.NoError(t, json.Unmarshal(body, &doc))
		for _, name := range schema.Required {
			require.Contains(t, doc, name)
		}
		for name, v := range doc {
			prop, ok := schema.Properties[name]
			require.True(t, ok, "member %q is not in the schema", name)
			if s, isString := v.(string); isString {
				if prop.Pattern != "" {
					require.Regexp(t, prop.Pattern, s, name)
				}
				if prop.MinLength > 0 {
					require.GreaterOrEqual(t, len(s), prop.MinLength, name)
				}
			}
		}
		ts, err := time.Parse(time.RFC3339, doc["timestamp"].(string))
		require.NoError(t, err)
		require.True(t, ts.Equal(at))
	}
}

func TestAppendJSONStringMatchesEncodingJSON(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"", "plain", `q"uote`, `back\slash`, "nl\n cr\r tab\t", "\x00\x01\x1f\x7f",
		"<html>&amp;", "caf\u00e9 \u65e5\u672c", "\u2028\u2029", "bad\xffutf8\xc3", "emoji \U0001F600"} {
		want, err := marshalCompact(s)
		require.NoError(t, err)
		require.Equal(t, string(want), string(appendJSONString(nil, s)), "%q", s)
	}
}

func FuzzAppendJSONString(f *testing.F) {
	f.Add("hello")
	f.Add("\u2028<\x00>\xff")
	f.Fuzz(func(t *testing.T, s string) {
		want, err := marshalCompact(s)
		require.NoError(t, err)
		require.Equal(t, string(want), string(appendJSONString(nil, s)))
	})
}

func TestBuildMCPBodyEdgeCases(t *testing.T) {
	t.Parallel()
	base := MCPWebhook{OperationID: "op", TaskID: "task 1/α", TaskType: TaskLogEvent, Status: StatusFailed}
	body, _, err := BuildMCPBody(base, at)
	require.NoError(t, err, "a task ID that cannot form a notification_id is still valid")
	require.NotContains(t, string(body), "notification_id")
	require.Contains(t, string(body), `"task_id":"task 1/α"`)

	base.TaskID = "t1"
	base.Result = json.RawMessage(nil)
	body, _, err = BuildMCPBody(base, at)
	require.NoError(t, err)
	require.NotContains(t, string(body), "result", "a nil RawMessage omits the member")
}

// FuzzBuildMCPBody: whatever it is given, BuildMCPBody either refuses it
// with a ValidationError or builds one strict JSON object (no duplicate
// keys, valid UTF-8) that decodes back to what it was given.
func FuzzBuildMCPBody(f *testing.F) {
	f.Add("op_1", "task_1", "create_media_buy", "completed", "done", "ctx", "tok-0123456789abcdef", "nid.1", []byte(`{"media_buy_id":"mb_1"}`), int64(0))
	_, _, err := BuildMCPBody(MCPWebhook{OperationID: "op_1", TaskID: "task_1", TaskType: "create_media_buy", Status: "completed",
		Token: "tok-0123456789abcdef", NotificationID: "nid.1", Result: json.RawMessage(`{"media_buy_id":"mb_1"}`)}, at)
	require.NoError(f, err, "the first seed builds: the round trip is reachable")
	f.Add("op", "t", "create_media_buy", "failed", "\u2028<\x00>", "", "", "", []byte(`{"a":1,"a":2}`), int64(1e12))
	f.Add("o", "t\xff", "x", "working", "m", "c", "short", "bad id", []byte("[1,2"), int64(-1e15))
	f.Fuzz(func(t *testing.T, op, task, taskType, status, message, contextID, token, nid string, result []byte, unix int64) {
		w := MCPWebhook{OperationID: op, TaskID: task, TaskType: TaskType(taskType), Status: Status(status), Message: message,
			ContextID: contextID, Token: token, NotificationID: nid, Timestamp: time.Unix(unix, 0)}
		if result != nil {
			w.Result = json.RawMessage(result)
		}
		body, key, err := BuildMCPBody(w, at)
		if err != nil {
			var ve *ValidationError
			require.ErrorAs(t, err, &ve)
			require.NotEmpty(t, ve.Field)
			return
		}
		require.NoError(t, strictjson.Check(body), "%q", body)
		var got struct {
			IdempotencyKey string          `json:"idempotency_key"`
			OperationID    string          `json:"operation_id"`
			TaskID         string          `json:"task_id"`
			TaskType       string          `json:"task_type"`
			Status         string          `json:"status"`
			Message        string          `json:"message"`
			ContextID      string          `json:"context_id"`
			Token          string          `json:"token"`
			Timestamp      time.Time       `json:"timestamp"`
			Result         json.RawMessage `json:"result"`
		}
		require.NoError(t, json.Unmarshal(body, &got))
		require.Equal(t, key, got.IdempotencyKey)
		require.Equal(t, []string{op, task, taskType, status, message, contextID, token},
			[]string{got.OperationID, got.TaskID, got.TaskType, got.Status, got.Message, got.ContextID, got.Token})
		require.True(t, got.Timestamp.Equal(time.Unix(unix, 0)), "timestamp %v, want %v", got.Timestamp, time.Unix(unix, 0))
		if result != nil {
			// Verbatim, whitespace included (which a decoder would trim
			// from got.Result): the body ends with exactly these bytes.
			require.True(t, bytes.HasSuffix(body, []byte(`,"result":`+string(result)+`}`)), "a raw result is sent verbatim: %q", body)
		}
	})
}

// TestNotificationIDPerType: the default "<task_id>.terminal" belongs to
// task webhooks; delivery reports carry no notification_id at all; other
// notification types carry what the caller sets; and it can be omitted.
func TestNotificationIDPerType(t *testing.T) {
	t.Parallel()
	base := MCPWebhook{OperationID: "op", TaskID: "task_9", TaskType: TaskCreateMediaBuy, Status: StatusCompleted}
	nid := func(w MCPWebhook) (string, error) {
		body, _, err := BuildMCPBody(w, at)
		if err != nil {
			return "", err
		}
		var got struct {
			NotificationID *string `json:"notification_id"`
		}
		require.NoError(t, json.Unmarshal(body, &got))
		if got.NotificationID == nil {
			return "<absent>", nil
		}
		return *got.NotificationID, nil
	}
	with := func(f func(*MCPWebhook)) MCPWebhook { w := base; f(&w); return w }

	got, err := nid(base)
	require.NoError(t, err)
	require.Equal(t, "task_9.terminal", got, "a terminal task webhook")
	got, _ = nid(with(func(w *MCPWebhook) { w.OmitNotificationID = true }))
	require.Equal(t, "<absent>", got, "omitted on request")
	got, _ = nid(with(func(w *MCPWebhook) { w.Status = StatusWorking }))
	require.Equal(t, "<absent>", got, "not terminal")
	for _, typ := range []string{NotificationScheduled, NotificationFinal, NotificationDelayed, NotificationAdjusted, NotificationWindowUpdate} {
		got, err = nid(with(func(w *MCPWebhook) { w.TaskType, w.NotificationType = "media_buy_delivery", typ }))
		require.NoError(t, err)
		require.Equal(t, "<absent>", got, "a %s delivery report, terminal status or not", typ)
		_, err = nid(with(func(w *MCPWebhook) {
			w.TaskType, w.NotificationType, w.NotificationID = "media_buy_delivery", typ, "nid.1"
		}))
		var ve *ValidationError
		require.ErrorAs(t, err, &ve, typ)
		require.Equal(t, "NotificationID", ve.Field)
	}
	got, _ = nid(with(func(w *MCPWebhook) { w.NotificationType = "impairment" }))
	require.Equal(t, "<absent>", got, "no task default for an event with its own identity")
	got, _ = nid(with(func(w *MCPWebhook) { w.NotificationType, w.NotificationID = "impairment", "imp_42" }))
	require.Equal(t, "imp_42", got)
}
