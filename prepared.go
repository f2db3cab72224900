package webhook

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strings"
	"time"

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
}

// scrub replaces, in text from a Sender (an error that may echo the
// request), every secret the delivery carries: its URL's query, fragment,
// query values and token-shaped path segments, its credentials, its header
// values and its MCP body's push-notification token.
func (d *prepared) scrub(text string) string {
	var secrets []string
	if u, err := url.Parse(d.url); err == nil {
		secrets = append(secrets, u.RawQuery, u.Fragment, u.EscapedFragment())
		for _, vs := range u.Query() {
			secrets = append(secrets, vs...)
		}
		for _, seg := range strings.Split(u.EscapedPath(), "/") {
			if tokenShaped(seg) {
				secrets = append(secrets, seg)
			}
		}
	}
	if bytes.Contains(d.body, []byte(`"token"`)) {
		var mcp struct {
			Token string `json:"token"`
		}
		if json.Unmarshal(d.body, &mcp) == nil {
			secrets = append(secrets, mcp.Token)
		}
	}
	if a := d.routing.Authentication; a != nil {
		secrets = append(secrets, a.Credentials)
	}
	for _, v := range d.routing.Headers {
		secrets = append(secrets, v)
	}
	slices.SortFunc(secrets, func(a, b string) int { return len(b) - len(a) }) // a value inside the query after it
	for _, s := range secrets {
		if len(s) >= minScrubbed {
			text = strings.ReplaceAll(text, s, "<redacted>")
		}
	}
	return text
}

// errorText is a Sender's error as an attempt records it: scrubbed of the
// delivery's secrets (before it is cut, so that no secret is cut in half
// and kept), printable, at most maxErrorText bytes. A huge error costs no
// more than one of maxErrorText plus the longest secret.
func (d *prepared) errorText(err error) string {
	text := err.Error()
	if limit := maxErrorText + MaxCredentialsLength + maxHeaderValue; len(text) > limit {
		text = text[:limit]
	}
	return printable([]byte(d.scrub(text)), maxErrorText)
}

// minScrubbed is the shortest secret scrub replaces: shorter values (a
// query's "1" or "true") would redact ordinary words.
const minScrubbed = 6

// size is about how many bytes d holds: its strings and body.
func (d *prepared) size() int64 {
	n := len(d.url) + len(d.body) + len(d.key) + len(d.taskType) + len(d.taskID) + len(d.breakerKey) +
		len(d.routing.SequenceKey) + len(d.routing.BreakerKey) + len(d.routing.NotificationType)
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
	if err := strictjson.Check(w.Body); err != nil {
		return prepared{}, invalid("Body", "is not strict JSON: %v", err)
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
	if err := w.Routing.check(); err != nil {
		return prepared{}, err
	}
	return newPrepared(w.URL, bytes.Clone(w.Body), w.IdempotencyKey, w.TaskType, w.TaskID, w.Routing), nil
}

// prepareMCP validates w and builds its body, as SendMCP does.
func (p urlPolicy) prepareMCP(w MCPWebhook, now time.Time) (prepared, error) {
	if err := p.checkURL("URL", w.URL); err != nil {
		return prepared{}, err
	}
	if err := w.Routing.check(); err != nil {
		return prepared{}, err
	}
	body, key, err := BuildMCPBody(w, now)
	if err != nil {
		return prepared{}, err
	}
	return newPrepared(w.URL, body, key, w.TaskType, w.TaskID, w.Routing), nil
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
