package webhook

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/adcpkit/webhook/internal/ident"
	"github.com/adcpkit/webhook/internal/strictjson"
	"github.com/adcpkit/webhook/receive"
)

// This file builds webhook bodies: the MCP envelope, byte for byte, and
// idempotency keys.

// MaxBodyBytes is the largest webhook body the package accepts: 10 MiB,
// the same limit as the buyer side's.
const MaxBodyBytes = receive.MaxBodyBytes

// mcpBodyPrefix starts every body BuildMCPBody writes: idempotency_key is
// its first member, and keys need no JSON escaping.
const mcpBodyPrefix = `{"idempotency_key":"`

// reemitBody rebuilds an MCP body BuildMCPBody made under key with newKey
// instead: a re-emission, past the retry horizon, sends the same payload
// under a fresh key. BuildMCPBody writes idempotency_key first, and keys
// need no JSON escaping, so the rebuild is exact. It reports false for a
// body that does not start that way.
func reemitBody(body []byte, key, newKey string) ([]byte, bool) {
	head := len(mcpBodyPrefix) + len(key)
	if len(body) <= head || string(body[:len(mcpBodyPrefix)]) != mcpBodyPrefix || string(body[len(mcpBodyPrefix):head]) != key || body[head] != '"' {
		return nil, false
	}
	out := make([]byte, 0, len(body)-len(key)+len(newKey))
	out = append(out, mcpBodyPrefix...)
	out = append(out, newKey...)
	return append(out, body[head:]...), true
}

// NewIdempotencyKey returns a fresh "whk_<uuid4>" key from crypto/rand.
func NewIdempotencyKey() string { return "whk_" + newUUID() }

// newUUID returns a random (version 4) UUID in its canonical text form.
func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms.
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	var s [36]byte
	hex.Encode(s[0:8], b[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], b[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], b[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], b[8:10])
	s[23] = '-'
	hex.Encode(s[24:], b[10:])
	return string(s[:])
}

// timestampLayout is RFC 3339 in UTC with milliseconds.
const timestampLayout = "2006-01-02T15:04:05.000Z07:00"

// BuildMCPBody validates w and returns the exact body SendMCP would send and
// the idempotency key inside it. now fills a zero Timestamp. Supervisors call
// it once per delivery; it is exported for receivers' tests and for sellers
// who store bodies themselves.
//
// A webhook with WriteSequenceNumber needs a supervisor to draw its number:
// BuildMCPBody refuses it.
func BuildMCPBody(w MCPWebhook, now time.Time) (body []byte, key string, err error) {
	if w.WriteSequenceNumber {
		return nil, "", invalid("WriteSequenceNumber", "is set: the sequence number is drawn by a supervisor at acceptance; write sequence_number into Result yourself to build the body alone")
	}
	body, key, _, err = buildMCPBody(w, now)
	return body, key, err
}

// buildMCPBody is BuildMCPBody. For WriteSequenceNumber the body is a
// template whose Result starts with "sequence_number":0, and seqAt is the
// offset of that 0, which the supervisor replaces with the number it
// draws (see spliceSequence).
func buildMCPBody(w MCPWebhook, now time.Time) (_ []byte, key string, seqAt int, err error) {
	if err := checkText("OperationID", w.OperationID, true, 255); err != nil {
		return nil, "", 0, err
	}
	if err := checkText("TaskID", w.TaskID, true, 255); err != nil {
		return nil, "", 0, err
	}
	if w.TaskType == "" {
		return nil, "", 0, invalid("TaskType", "is required; use a TaskType constant such as TaskCreateMediaBuy")
	}
	if !validTaskType(w.TaskType) {
		return nil, "", 0, invalid("TaskType", "is %q; use a TaskType constant or a snake_case task name", w.TaskType)
	}
	if !w.Status.Valid() {
		return nil, "", 0, invalid("Status", "is %q; use one of the nine Status constants, such as StatusCompleted", w.Status)
	}
	if w.Protocol != "" && !w.Protocol.Valid() {
		return nil, "", 0, invalid("Protocol", "is %q; use a Protocol constant or leave it empty to derive it from TaskType", w.Protocol)
	}
	if w.Token != "" {
		if n := utf8.RuneCountInString(w.Token); n < 16 || n > 4096 {
			return nil, "", 0, invalid("Token", "has %d characters; push_notification_config.token must have 16 to 4096", n)
		}
		if !utf8.ValidString(w.Token) {
			return nil, "", 0, invalid("Token", "is not valid UTF-8")
		}
	}
	if err := checkText("ContextID", w.ContextID, false, 1024); err != nil {
		return nil, "", 0, err
	}
	if w.Message != "" && !utf8.ValidString(w.Message) {
		return nil, "", 0, invalid("Message", "is not valid UTF-8")
	}
	if len(w.Message) > MaxBodyBytes {
		return nil, "", 0, &ValidationError{Field: "Message", Reason: fmt.Sprintf("is %d bytes; a body holds at most %d", len(w.Message), MaxBodyBytes), sentinel: ErrBodyTooLarge}
	}
	if y := w.Timestamp.UTC().Year(); !w.Timestamp.IsZero() && (y < 0 || y > 9999) {
		return nil, "", 0, invalid("Timestamp", "is in year %d; RFC 3339 timestamps have years 0000 to 9999", y)
	}
	nid := w.NotificationID
	if nid != "" && !ident.Valid(nid, 1, 255) {
		return nil, "", 0, invalid("NotificationID", "must match ^[A-Za-z0-9_.:-]{1,255}$ (got %q)", nid)
	}
	if nid != "" && DeliveryReport(w.NotificationType) {
		return nil, "", 0, invalid("NotificationID", "is set on a %q delivery report; delivery reports carry no notification_id (receivers de-duplicate them by idempotency_key): leave it empty", w.NotificationType)
	}
	switch {
	case w.OmitNotificationID:
		nid = ""
	case nid == "" && w.NotificationType == "" && w.Status.Terminal():
		// The default is omitted when the task ID cannot form a valid one.
		if def := w.TaskID + ".terminal"; ident.Valid(def, 1, 255) {
			nid = def
		}
	}
	key = w.IdempotencyKey
	if key == "" {
		key = NewIdempotencyKey()
	} else if err := checkKey("IdempotencyKey", key); err != nil {
		return nil, "", 0, err
	}
	var result []byte
	if w.Result != nil {
		if raw, ok := w.Result.(json.RawMessage); ok {
			result = raw // a nil RawMessage omits the member, like a nil Result
		} else {
			var err error
			if result, err = marshalCompact(w.Result); err != nil {
				return nil, "", 0, invalid("Result", "does not marshal to JSON: %v", err)
			}
		}
		// The signer must not send what two readers would read apart:
		// duplicate keys (from a json.RawMessage or a MarshalJSON
		// anywhere in it) or invalid UTF-8.
		if err := strictjson.Check(result); result != nil && err != nil {
			return nil, "", 0, invalid("Result", "is not strict JSON: %v", err)
		}
	}
	ts := w.Timestamp
	if ts.IsZero() {
		ts = now
	}
	protocol := w.Protocol
	if protocol == "" {
		protocol, _ = ProtocolForTaskType(w.TaskType)
	}

	b := make([]byte, 0, 200+len(key)+len(nid)+len(w.OperationID)+len(w.TaskID)+len(w.TaskType)+
		len(w.Message)+len(w.ContextID)+len(w.Token)+len(result))
	b = append(b, '{')
	member := func(name, value string) {
		if value == "" {
			return
		}
		if len(b) > 1 {
			b = append(b, ',')
		}
		b = append(b, '"')
		b = append(b, name...)
		b = append(b, '"', ':')
		b = appendJSONString(b, value)
	}
	member("idempotency_key", key)
	member("notification_id", nid)
	member("operation_id", w.OperationID)
	member("task_id", w.TaskID)
	member("task_type", string(w.TaskType))
	member("protocol", string(protocol))
	member("status", string(w.Status))
	if len(b) > 1 {
		b = append(b, ',')
	}
	b = append(b, `"timestamp":"`...)
	b = ts.UTC().AppendFormat(b, timestampLayout)
	b = append(b, '"')
	member("message", w.Message)
	member("context_id", w.ContextID)
	member("token", w.Token)
	if w.WriteSequenceNumber {
		// Result's first member becomes "sequence_number":0, the 0 at seqAt.
		if result == nil {
			return nil, "", 0, invalid("Result", "is empty, but WriteSequenceNumber writes sequence_number into it: pass the delivery report's result object")
		}
		open := bytes.IndexByte(result, '{')
		if open < 0 || len(bytes.TrimSpace(result[:open])) > 0 {
			return nil, "", 0, invalid("Result", "is not a JSON object, but WriteSequenceNumber writes sequence_number into it")
		}
		var members map[string]json.RawMessage
		if err := json.Unmarshal(result, &members); err != nil {
			return nil, "", 0, invalid("Result", "is not a JSON object: %v", err)
		}
		if _, ok := members["sequence_number"]; ok {
			return nil, "", 0, invalid("Result", "has a sequence_number, and WriteSequenceNumber writes the supervisor's: remove one of them")
		}
		if w.SequenceKey == "" {
			return nil, "", 0, invalid("WriteSequenceNumber", "is set without a Routing.SequenceKey, the stream the number is drawn from: set one (a media buy's reporting stream, say)")
		}
		b = append(b, `,"result":`...)
		b = append(b, result[:open+1]...)
		b = append(b, `"sequence_number":`...)
		seqAt = len(b)
		b = append(b, '0')
		if rest := bytes.TrimLeft(result[open+1:], " \t\r\n"); len(rest) > 0 && rest[0] != '}' {
			b = append(b, ',')
		}
		b = append(b, result[open+1:]...)
	} else if result != nil {
		b = append(b, `,"result":`...)
		b = append(b, result...)
	}
	b = append(b, '}')
	if seqAt > 0 && len(b)+maxSequenceDigits > MaxBodyBytes || len(b) > MaxBodyBytes {
		field := "Result" // the larger of the two that can be large
		if len(w.Message) > len(result) {
			field = "Message"
		}
		return nil, "", 0, &ValidationError{Field: field, Reason: fmt.Sprintf("makes a %d-byte body; at most %d are accepted", len(b), MaxBodyBytes), sentinel: ErrBodyTooLarge}
	}
	return b, key, seqAt, nil
}

// marshalCompact marshals v without HTML escaping and without the encoder's
// trailing newline.
func marshalCompact(v any) (_ []byte, err error) {
	defer func() {
		if recover() != nil {
			// Not the panic's value: it may hold anything of v.
			err = errors.New("a MarshalJSON or MarshalText method panicked")
		}
	}()
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte{'\n'}), nil
}

// appendJSONString appends s as a JSON string the way encoding/json writes it
// with HTML escaping off: quotes, backslashes and control characters escaped,
// U+2028 and U+2029 escaped, invalid UTF-8 replaced by U+FFFD.
func appendJSONString(b []byte, s string) []byte {
	const hexDigits = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// maxSequenceDigits is how many digits a sequence number (an int64, at
// least 1) may add to a template in place of its 0.
const maxSequenceDigits = 18

// spliceSequence writes seq into a template in place of the 0 at seqAt.
func spliceSequence(template []byte, seqAt int, seq int64) []byte {
	out := make([]byte, 0, len(template)+maxSequenceDigits)
	out = append(out, template[:seqAt]...)
	out = strconv.AppendInt(out, seq, 10)
	return append(out, template[seqAt+1:]...)
}

// mcpNotificationID reads the notification_id of a body BuildMCPBody made
// under key: the member right after idempotency_key, when there is one
// (it needs no JSON escaping).
func mcpNotificationID(body []byte, key string) string {
	rest, ok := bytes.CutPrefix(body, []byte(mcpBodyPrefix+key+`","notification_id":"`))
	if !ok {
		return ""
	}
	end := bytes.IndexByte(rest, '"')
	if end < 0 {
		return ""
	}
	return string(rest[:end])
}
