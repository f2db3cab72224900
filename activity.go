package webhook

import (
	"cmp"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/adcpkit/webhook/internal/ident"
)

// ActivityStatus is the outcome of one attempt in an [ActivityRecord].
type ActivityStatus string

// Activity statuses, as AdCP's webhook-activity-record.json defines them.
const (
	// ActivitySuccess: the receiver answered 2xx.
	ActivitySuccess ActivityStatus = "success"
	// ActivityFailed: the receiver answered something else.
	ActivityFailed ActivityStatus = "failed"
	// ActivityTimeout: no answer came in time.
	ActivityTimeout ActivityStatus = "timeout"
	// ActivityConnectionError: no answer at all (DNS, TCP, TLS, a refused
	// destination).
	ActivityConnectionError ActivityStatus = "connection_error"
	// ActivityPending: the attempt is in flight or queued.
	ActivityPending ActivityStatus = "pending"
)

// Activity limits: AdCP's webhook_activity_limit is 1 to 200, 50 by
// default.
const (
	ActivityLimitDefault = 50
	ActivityLimitMax     = 200
)

// ActivityRetention is the least time AdCP 3.2 requires activity records
// to be kept after their attempt completed: 30 days. The Postgres
// supervisor's default Retention is this.
const ActivityRetention = 30 * 24 * time.Hour

// ActivityRecord is one attempt as AdCP's webhook_activity[] shows it to
// the buyer it was sent to (webhook-activity-record.json): marshalled as
// JSON it has the schema's members, with explicit nulls where the schema
// wants them.
type ActivityRecord struct {
	// IdempotencyKey is the payload's idempotency_key.
	IdempotencyKey string `json:"idempotency_key"`
	// NotificationID is the payload's notification_id, when it has one.
	NotificationID string `json:"notification_id,omitempty"`
	// SubscriberID is the delivery's Routing.SubscriberID, when set.
	SubscriberID string `json:"subscriber_id,omitempty"`
	// FiredAt is when the attempt started (for a queued attempt, when it
	// is due).
	FiredAt time.Time `json:"fired_at"`
	// CompletedAt is when the attempt ended; nil while pending.
	CompletedAt *time.Time `json:"completed_at"`
	// NotificationType is the delivery's Routing.NotificationType.
	NotificationType string `json:"notification_type"`
	// SequenceNumber is the delivery's number in its Routing.SequenceKey
	// stream, when it has one: the payload's sequence_number when
	// MCPWebhook.WriteSequenceNumber wrote it there. (A stream whose
	// payloads carry numbers of their own should not also have a
	// SequenceKey.)
	SequenceNumber int64 `json:"sequence_number,omitempty"`
	// Attempt counts the attempts under the key from 1, across
	// redeliveries (unlike Attempt.AttemptNumber, which a redelivery's
	// fresh allowance restarts). An attempt cut short by its own worker's
	// stop is not shown.
	Attempt int `json:"attempt"`
	// Status is the attempt's outcome.
	Status ActivityStatus `json:"status"`
	// URL is the destination without userinfo, query and fragment, and
	// with token-shaped path segments replaced by "redacted".
	URL string `json:"url"`
	// HTTPStatusCode is the receiver's status; nil without a response.
	HTTPStatusCode *int `json:"http_status_code"`
	// ResponseTimeMS is how long the response took; nil without one.
	ResponseTimeMS *int64 `json:"response_time_ms"`
	// PayloadSizeBytes is the body's size.
	PayloadSizeBytes int `json:"payload_size_bytes"`
	// ErrorMessage classifies a failure (never a header or body); nil on
	// success and while pending.
	ErrorMessage *string `json:"error_message"`
}

// ActivityQuery selects activity records: those of the deliveries that
// match every filter set (at least one must be), newest first.
type ActivityQuery struct {
	// DeliveryID selects one delivery.
	DeliveryID string
	// TaskID selects the deliveries of a task (MCPWebhook.TaskID).
	TaskID string
	// SubscriberID selects the deliveries to a subscriber
	// (Routing.SubscriberID).
	SubscriberID string
	// Limit is how many records to return: 1 to ActivityLimitMax; 0 means
	// ActivityLimitDefault.
	Limit int
}

func (q ActivityQuery) check() (ActivityQuery, error) {
	if q.DeliveryID == "" && q.TaskID == "" && q.SubscriberID == "" {
		return q, invalid("ActivityQuery", "selects nothing: set DeliveryID, TaskID or SubscriberID (AdCP scopes activity to the calling principal's fires)")
	}
	switch {
	case q.Limit == 0:
		q.Limit = ActivityLimitDefault
	case q.Limit < 1 || q.Limit > ActivityLimitMax:
		return q, invalid("Limit", "is %d; use 1 to %d (0 means %d)", q.Limit, ActivityLimitMax, ActivityLimitDefault)
	}
	return q, nil
}

// shownAsActivity reports whether a record is an attempt of activity: an
// HTTP attempt (not a decision, AttemptNumber 0), not cut short by its
// own worker's stop, of a delivery with the notification type the schema
// requires.
func shownAsActivity(a *Attempt) bool {
	return a.AttemptNumber > 0 && a.NotificationType != "" && !strings.HasPrefix(a.Error, cancelledText)
}

// activityOf is the record of attempt a, the ordinal-th of its delivery's
// activity. (AttemptNumber restarts at 1 when Redeliver grants a fresh
// allowance; the record's attempt counts every attempt under the key.)
func activityOf(a *Attempt, ordinal int) ActivityRecord {
	r := ActivityRecord{
		IdempotencyKey: a.IdempotencyKey, SubscriberID: a.SubscriberID, FiredAt: a.OccurredAt.UTC(),
		NotificationType: a.NotificationType, SequenceNumber: a.SequenceNumber, Attempt: ordinal,
		URL: activityURL(a.URL), PayloadSizeBytes: a.PayloadSize,
	}
	if ident.Valid(a.NotificationID, 1, 255) {
		r.NotificationID = a.NotificationID
	}
	done := r.FiredAt.Add(a.ResponseTime)
	r.CompletedAt = &done
	switch {
	case a.Outcome == OutcomeSuccess:
		r.Status = ActivitySuccess
	case a.HTTPStatus != 0:
		r.Status = ActivityFailed
	case a.TimedOut:
		r.Status = ActivityTimeout
	default:
		r.Status = ActivityConnectionError
	}
	if a.HTTPStatus != 0 {
		code, ms := a.HTTPStatus, a.ResponseTime.Milliseconds()
		r.HTTPStatusCode, r.ResponseTimeMS = &code, &ms
	}
	if r.Status != ActivitySuccess {
		// Not the seller's resolver address a DNS error names.
		msg := truncateRunes(resolverRE.ReplaceAllString(a.Error, "lookup $1:"), 500)
		if msg == "" {
			msg = string(r.Status)
		}
		r.ErrorMessage = &msg
	}
	return r
}

// resolverRE matches the resolver in Go's DNS errors ("lookup b.example
// on 10.0.0.2:53: no such host").
var resolverRE = regexp.MustCompile(`lookup (\S+) on \S+:`)

// pendingActivity is the record of a delivery's next attempt while it is
// queued or in flight: due (or started) at firedAt.
func pendingActivity(base Attempt, attempt int, firedAt time.Time) (ActivityRecord, bool) {
	if base.NotificationType == "" {
		return ActivityRecord{}, false
	}
	r := ActivityRecord{
		IdempotencyKey: base.IdempotencyKey, SubscriberID: base.SubscriberID, FiredAt: firedAt.UTC(),
		NotificationType: base.NotificationType, SequenceNumber: base.SequenceNumber, Attempt: attempt,
		Status: ActivityPending, URL: activityURL(base.URL), PayloadSizeBytes: base.PayloadSize,
	}
	if ident.Valid(base.NotificationID, 1, 255) {
		r.NotificationID = base.NotificationID
	}
	return r, true
}

// newestFirst sorts records newest first and keeps limit of them.
func newestFirst(rs []ActivityRecord, limit int) []ActivityRecord {
	slices.SortStableFunc(rs, func(a, b ActivityRecord) int {
		if c := b.FiredAt.Compare(a.FiredAt); c != 0 {
			return c
		}
		return cmp.Compare(b.Attempt, a.Attempt)
	})
	if len(rs) > limit {
		rs = rs[:limit]
	}
	if rs == nil {
		rs = []ActivityRecord{} // marshals as [], never null
	}
	return rs
}

// activityURL is a URL (or a LoggableURL) as the activity record shows
// it: loggable, with the redaction marker made a plain path segment.
func activityURL(u string) string {
	u = strings.ReplaceAll(u, "<redacted>", "redacted") // a LoggableURL's marker
	return strings.ReplaceAll(LoggableURL(u), "<redacted>", "redacted")
}

func truncateRunes(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	i := 0
	for range n {
		_, size := utf8.DecodeRuneInString(s[i:])
		i += size
	}
	return s[:i]
}
