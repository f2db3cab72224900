package webhook

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"maps"
	"time"

	"github.com/adcpkit/webhook/internal/ident"
	"github.com/adcpkit/webhook/internal/jcs"
	"github.com/adcpkit/webhook/internal/strictjson"
)

// This file holds prepared, the validated delivery a supervisor accepts:
// exact body bytes, key and routing, copied from the caller's webhook.

// prepared is a validated delivery with its body frozen.
type prepared struct {
	url        string
	body       []byte
	key        string
	taskType   TaskType
	taskID     string
	breakerKey string
	routing    Routing
	// mcp reports a body BuildMCPBody built, which a re-emission can
	// rebuild under a fresh key (see reemitBody).
	mcp bool
	// reemissionOf is the ID of the delivery this one re-emits, or "".
	reemissionOf string
	// fp is the SHA-256 of the body's RFC 8785 canonical form: the
	// payload its key is bound to. (For a template, the payload as
	// submitted: with its sequence number 0.)
	fp [sha256.Size]byte
	// nid is the body's notification_id, or "".
	nid string
	// carrier is what Observer.Accepting returned: stored with the
	// delivery, handed to every attempt.
	carrier string
	// seqAt, when positive, makes body a template: the supervisor writes
	// the sequence number it draws in place of the 0 at seqAt
	// (MCPWebhook.WriteSequenceNumber).
	seqAt int
}

// bind computes d's payload fingerprint, refusing (as field's fault) a
// body with no RFC 8785 canonical form.
func (d *prepared) bind(field string) error {
	fp, err := jcs.Sum256(d.body)
	if err != nil {
		return canonicalFormError(field, err)
	}
	d.fp = fp
	return nil
}

func canonicalFormError(field string, err error) error {
	return invalid(field, "has no RFC 8785 canonical form, which AdCP 3.2 binds the idempotency key to: %v", err)
}

// conflict is the error for a key already bound to another payload (or
// URL) by delivery id.
func conflict(id string) error {
	return &ValidationError{Field: "IdempotencyKey", sentinel: ErrIdempotencyConflict,
		Reason: "is bound to a different payload or URL, by delivery " + id + ": a key stays bound to its payload's canonical form for the retry horizon. " +
			"Use a fresh key for a changed payload; to retry the same event send the identical payload (for SendMCP, set Timestamp to the original's)"}
}

// size is about how many bytes d holds: its strings and body.
func (d *prepared) size() int64 {
	n := len(d.url) + len(d.body) + len(d.key) + len(d.taskType) + len(d.taskID) + len(d.breakerKey) +
		len(d.routing.SequenceKey) + len(d.routing.BreakerKey) + len(d.routing.NotificationType) +
		len(d.routing.SubscriberID) + len(d.nid)
	if a := d.routing.Authentication; a != nil {
		n += len(a.Scheme) + len(a.Credentials)
	}
	for k, v := range d.routing.Headers {
		n += len(k) + len(v)
	}
	return int64(n)
}

// prepare validates w and copies it; the copy is what gets stored.
func (p urlPolicy) prepare(w PreparedWebhook) (prepared, error) {
	if err := p.checkURL("URL", w.URL); err != nil {
		return prepared{}, err
	}
	if len(w.Body) > MaxBodyBytes {
		return prepared{}, &ValidationError{Field: "Body", Reason: fmt.Sprintf("is %d bytes; at most %d are accepted", len(w.Body), MaxBodyBytes), sentinel: ErrBodyTooLarge}
	}
	// One pass canonicalises a valid body; only a refused one is scanned
	// again, for strictjson's error, which says what is wrong without
	// quoting the body.
	fp, err := jcs.Sum256(w.Body)
	if err != nil {
		if serr := strictjson.Check(w.Body); serr != nil {
			return prepared{}, invalid("Body", "is not strict JSON: %v", serr)
		}
		return prepared{}, canonicalFormError("Body", err)
	}
	if err := checkKey("IdempotencyKey", w.IdempotencyKey); err != nil {
		return prepared{}, err
	}
	if w.TaskType != "" && !validTaskType(w.TaskType) {
		return prepared{}, invalid("TaskType", "is %q; use a TaskType constant or a snake_case task name", w.TaskType)
	}
	if err := checkText("TaskID", w.TaskID, false, 255); err != nil {
		return prepared{}, err
	}
	if err := p.checkRouting(&w.Routing); err != nil {
		return prepared{}, err
	}
	d := newPrepared(w.URL, bytes.Clone(w.Body), w.IdempotencyKey, w.TaskType, w.TaskID, w.Routing)
	d.fp = fp
	// The body's own key, which receivers de-duplicate on, is the one
	// bound; and its notification_id is what activity records carry.
	var members map[string]json.RawMessage
	if json.Unmarshal(d.body, &members) == nil {
		var key, nid string
		if raw, ok := members["idempotency_key"]; ok && json.Unmarshal(raw, &key) == nil && key != w.IdempotencyKey {
			return prepared{}, invalid("IdempotencyKey", "is not the body's idempotency_key: receivers de-duplicate on the body's, so pass that one")
		}
		if raw, ok := members["notification_id"]; ok && json.Unmarshal(raw, &nid) == nil && ident.Valid(nid, 1, 255) {
			d.nid = nid
		}
	}
	return d, nil
}

// prepareMCP validates w and builds its body, as SendMCP does.
func (p urlPolicy) prepareMCP(w MCPWebhook, now time.Time) (prepared, error) {
	if err := p.checkURL("URL", w.URL); err != nil {
		return prepared{}, err
	}
	if err := p.checkRouting(&w.Routing); err != nil {
		return prepared{}, err
	}
	body, key, seqAt, err := buildMCPBody(w, now)
	if err != nil {
		return prepared{}, err
	}
	d := newPrepared(w.URL, body, key, w.TaskType, w.TaskID, w.Routing)
	d.mcp, d.seqAt, d.nid = true, seqAt, mcpNotificationID(body, key)
	if err := d.bind("Result"); err != nil { // the rest BuildMCPBody wrote itself
		return prepared{}, err
	}
	return d, nil
}

// newPrepared assembles a validated delivery; body is owned by it.
func newPrepared(url string, body []byte, key string, taskType TaskType, taskID string, r Routing) prepared {
	d := prepared{url: url, body: body, key: key, taskType: taskType, taskID: taskID, routing: r}
	if a := r.Authentication; a != nil {
		c := *a
		d.routing.Authentication = &c
	}
	d.routing.Headers = maps.Clone(r.Headers)
	d.breakerKey = cmpOr(r.BreakerKey, url)
	return d
}

// reemission is the delivery that re-emits d (whose ID is id) past its
// retry horizon: the same payload and routing under a fresh key.
func reemission(d *prepared, id string) (prepared, error) {
	if !d.mcp {
		return prepared{}, fmt.Errorf("%w: delivery %s's body was not built by SendMCP (or was accepted before re-emission existed); send the event again with a fresh idempotency_key and the same notification_id", ErrReemitPrepared, id)
	}
	key := NewIdempotencyKey()
	body, ok := reemitBody(d.body, d.key, key)
	if !ok { // cannot happen for a body BuildMCPBody built
		return prepared{}, fmt.Errorf("%w: delivery %s's body does not start with its idempotency_key", ErrReemitPrepared, id)
	}
	nd := newPrepared(d.url, body, key, d.taskType, d.taskID, d.routing)
	nd.mcp, nd.reemissionOf, nd.nid = true, id, mcpNotificationID(body, key)
	if err := nd.bind("Body"); err != nil { // cannot happen: the original had one
		return prepared{}, err
	}
	return nd, nil
}
