package webhook

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/adcpkit/webhook/internal/canon"
)

// MaxBodyBytes is the largest webhook body the package accepts: 10 MiB.
const MaxBodyBytes = 10 << 20

// Status is an AdCP task status.
type Status string

// The nine AdCP task statuses (enums/task-status.json).
const (
	StatusSubmitted     Status = "submitted"
	StatusWorking       Status = "working"
	StatusInputRequired Status = "input-required"
	StatusCompleted     Status = "completed"
	StatusCanceled      Status = "canceled"
	StatusFailed        Status = "failed"
	StatusRejected      Status = "rejected"
	StatusAuthRequired  Status = "auth-required"
	StatusUnknown       Status = "unknown"
)

// Valid reports whether s is one of the nine task statuses.
func (s Status) Valid() bool {
	switch s {
	case StatusSubmitted, StatusWorking, StatusInputRequired, StatusCompleted, StatusCanceled,
		StatusFailed, StatusRejected, StatusAuthRequired, StatusUnknown:
		return true
	}
	return false
}

// Terminal reports whether s ends a task: completed, failed, canceled or
// rejected.
func (s Status) Terminal() bool {
	switch s {
	case StatusCompleted, StatusFailed, StatusCanceled, StatusRejected:
		return true
	}
	return false
}

// TaskType is an AdCP task type. Names outside the constants are accepted when
// they are snake_case, so a new AdCP task needs no library upgrade.
type TaskType string

// The AdCP task types (enums/task-type.json).
const (
	TaskCreateMediaBuy               TaskType = "create_media_buy"
	TaskUpdateMediaBuy               TaskType = "update_media_buy"
	TaskBuyProducts                  TaskType = "buy_products"
	TaskAcceptProposal               TaskType = "accept_proposal"
	TaskControlMediaBuy              TaskType = "control_media_buy"
	TaskMediaBuyDelivery             TaskType = "media_buy_delivery"
	TaskSyncCreatives                TaskType = "sync_creatives"
	TaskBuildCreative                TaskType = "build_creative"
	TaskPreviewCreative              TaskType = "preview_creative"
	TaskActivateSignal               TaskType = "activate_signal"
	TaskGetProducts                  TaskType = "get_products"
	TaskRequestProposals             TaskType = "request_proposals"
	TaskRefineProposals              TaskType = "refine_proposals"
	TaskDeclineProposals             TaskType = "decline_proposals"
	TaskGetSignals                   TaskType = "get_signals"
	TaskCreatePropertyList           TaskType = "create_property_list"
	TaskUpdatePropertyList           TaskType = "update_property_list"
	TaskGetPropertyList              TaskType = "get_property_list"
	TaskListPropertyLists            TaskType = "list_property_lists"
	TaskDeletePropertyList           TaskType = "delete_property_list"
	TaskSyncAccounts                 TaskType = "sync_accounts"
	TaskGetAccountFinancials         TaskType = "get_account_financials"
	TaskGetCreativeDelivery          TaskType = "get_creative_delivery"
	TaskSyncEventSources             TaskType = "sync_event_sources"
	TaskSyncAudiences                TaskType = "sync_audiences"
	TaskSyncCatalogs                 TaskType = "sync_catalogs"
	TaskLogEvent                     TaskType = "log_event"
	TaskGetBrandIdentity             TaskType = "get_brand_identity"
	TaskSearchBrands                 TaskType = "search_brands"
	TaskGetRights                    TaskType = "get_rights"
	TaskAcquireRights                TaskType = "acquire_rights"
	TaskUpdateRights                 TaskType = "update_rights"
	TaskSyncAgentNotificationConfigs TaskType = "sync_agent_notification_configs"
)

// validTaskType reports whether t is snake_case: lowercase letters and
// digits in words joined by single underscores, starting with a letter.
func validTaskType(t TaskType) bool {
	if len(t) == 0 || len(t) > 128 || t[0] < 'a' || t[0] > 'z' || t[len(t)-1] == '_' {
		return false
	}
	for i := 1; i < len(t); i++ {
		c := t[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case c == '_' && t[i-1] != '_':
		default:
			return false
		}
	}
	return true
}

// Protocol is an AdCP protocol (enums/adcp-protocol.json).
type Protocol string

// The AdCP protocols.
const (
	ProtocolMediaBuy              Protocol = "media-buy"
	ProtocolSignals               Protocol = "signals"
	ProtocolGovernance            Protocol = "governance"
	ProtocolCreative              Protocol = "creative"
	ProtocolBrand                 Protocol = "brand"
	ProtocolSponsoredIntelligence Protocol = "sponsored-intelligence"
	ProtocolMeasurement           Protocol = "measurement"
)

// Valid reports whether p is one of the AdCP protocols.
func (p Protocol) Valid() bool {
	switch p {
	case ProtocolMediaBuy, ProtocolSignals, ProtocolGovernance, ProtocolCreative, ProtocolBrand,
		ProtocolSponsoredIntelligence, ProtocolMeasurement:
		return true
	}
	return false
}

var taskProtocols = map[TaskType]Protocol{
	TaskCreateMediaBuy:       ProtocolMediaBuy,
	TaskUpdateMediaBuy:       ProtocolMediaBuy,
	TaskGetProducts:          ProtocolMediaBuy,
	TaskSyncAccounts:         ProtocolMediaBuy,
	TaskGetAccountFinancials: ProtocolMediaBuy,
	TaskSyncEventSources:     ProtocolMediaBuy,
	TaskSyncAudiences:        ProtocolMediaBuy,
	TaskSyncCatalogs:         ProtocolMediaBuy,
	TaskLogEvent:             ProtocolMediaBuy,
	TaskSyncCreatives:        ProtocolCreative,
	TaskGetCreativeDelivery:  ProtocolCreative,
	TaskActivateSignal:       ProtocolSignals,
	TaskGetSignals:           ProtocolSignals,
	TaskCreatePropertyList:   ProtocolGovernance,
	TaskUpdatePropertyList:   ProtocolGovernance,
	TaskGetPropertyList:      ProtocolGovernance,
	TaskListPropertyLists:    ProtocolGovernance,
	TaskDeletePropertyList:   ProtocolGovernance,
	TaskGetBrandIdentity:     ProtocolBrand,
	TaskGetRights:            ProtocolBrand,
	TaskAcquireRights:        ProtocolBrand,
}

// ProtocolForTaskType returns the protocol SendMCP writes when
// [MCPWebhook.Protocol] is empty, and false for task types it does not map
// (the member is then omitted).
func ProtocolForTaskType(t TaskType) (Protocol, bool) {
	p, ok := taskProtocols[t]
	return p, ok
}

// validKeyChars reports whether s has min to max characters, all of
// [A-Za-z0-9_.:-]: the AdCP pattern for idempotency keys (16 to 255) and
// notification IDs (1 to 255).
func validKeyChars(s string, min, max int) bool {
	if len(s) < min || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == ':' || c == '-') {
			return false
		}
	}
	return true
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

// urlPolicy is what the supervisor allows in destination URLs.
type urlPolicy struct {
	allowHTTP bool
}

// checkURL validates a destination URL before anything is stored.
func (p urlPolicy) checkURL(field, raw string) error {
	if raw == "" {
		return invalid(field, "is empty; set it to the buyer's push_notification_config.url")
	}
	if len(raw) > 8192 {
		return invalid(field, "is %d bytes; at most 8192 are accepted", len(raw))
	}
	for _, r := range raw {
		if r < 0x20 || r >= 0x7f && r <= 0x9f {
			return invalid(field, "contains a control character")
		}
	}
	u, err := url.Parse(raw)
	if err != nil {
		return invalid(field, "does not parse as a URL")
	}
	if !u.IsAbs() || u.Host == "" {
		return invalid(field, "must be an absolute https URL with a host")
	}
	switch strings.ToLower(u.Scheme) {
	case "https":
	case "http":
		if !p.allowHTTP {
			return invalid(field, "uses plain http; use https, or set AllowInsecureHTTP in the supervisor config for local development")
		}
	default:
		return invalid(field, "has scheme %q; only https (and http where allowed) are delivered", u.Scheme)
	}
	if u.User != nil {
		return invalid(field, "contains userinfo (user:password@); put credentials in Authentication instead")
	}
	if u.Hostname() == "" {
		return invalid(field, "has an empty host")
	}
	if port := u.Port(); port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return invalid(field, "has port %q; use 1 to 65535", port)
		}
	}
	// Whatever is accepted must be signable: the signature covers the
	// AdCP canonical form of the URL.
	if _, _, err := canon.Target(raw); err != nil {
		return invalid(field, "cannot be signed (%v); percent-encode non-ASCII characters and give hosts in IDNA A-label (xn--) form", err)
	}
	return nil
}

// checkText rejects identifiers that are empty when required, too long, not
// UTF-8 or carry control characters.
func checkText(field, v string, required bool, max int) error {
	if v == "" {
		if required {
			return invalid(field, "is required")
		}
		return nil
	}
	if len(v) > max {
		return invalid(field, "is %d bytes; at most %d are allowed", len(v), max)
	}
	if !utf8.ValidString(v) {
		return invalid(field, "is not valid UTF-8")
	}
	for _, r := range v {
		if r < 0x20 || r == 0x7f {
			return invalid(field, "contains a control character")
		}
	}
	return nil
}

func checkKey(field, key string) error {
	if !validKeyChars(key, 16, 255) {
		return invalid(field, "must match ^[A-Za-z0-9_.:-]{16,255}$ (got %d bytes); leave it empty to get a fresh whk_<uuid4>", len(key))
	}
	return nil
}

func (a *Authentication) check() error {
	if a == nil {
		return nil
	}
	switch a.Scheme {
	case AuthBearer, AuthHMACSHA256:
	default:
		return invalid("Authentication.Scheme", "is %q; use %q or %q", a.Scheme, AuthBearer, AuthHMACSHA256)
	}
	if n := utf8.RuneCountInString(a.Credentials); n < MinCredentialsLength {
		return invalid("Authentication.Credentials", "has %d characters; at least %d are required", n, MinCredentialsLength)
	}
	return nil
}

func (r *Routing) check() error {
	if err := checkText("SequenceKey", r.SequenceKey, false, 255); err != nil {
		return err
	}
	if err := checkText("BreakerKey", r.BreakerKey, false, 2048); err != nil {
		return err
	}
	if err := checkText("NotificationType", r.NotificationType, false, 255); err != nil {
		return err
	}
	if err := checkHeaders(r.Headers); err != nil {
		return err
	}
	return r.Authentication.check()
}

// maxHeaders and maxHeaderValue bound Routing.Headers.
const (
	maxHeaders     = 16
	maxHeaderValue = 4096
)

// checkHeaders validates Routing.Headers. Values are not quoted in errors:
// they may be tokens.
func checkHeaders(h map[string]string) error {
	if len(h) > maxHeaders {
		return invalid("Headers", "has %d headers; at most %d are allowed", len(h), maxHeaders)
	}
	for name, value := range h {
		if name == "" || strings.IndexFunc(name, func(r rune) bool { return !isTokenChar(r) }) >= 0 {
			return invalid("Headers", "has a header named %q; names must be HTTP tokens", name)
		}
		if reservedHeader(name) {
			return invalid("Headers", "sets %s, which the sender sets itself; leave it out", http.CanonicalHeaderKey(name))
		}
		if len(value) > maxHeaderValue {
			return invalid("Headers", "has a %s value of %d bytes; at most %d are allowed", http.CanonicalHeaderKey(name), len(value), maxHeaderValue)
		}
		if !utf8.ValidString(value) || strings.IndexFunc(value, func(r rune) bool { return r < 0x20 && r != '\t' || r == 0x7f }) >= 0 {
			return invalid("Headers", "has a %s value with a control character or invalid UTF-8", http.CanonicalHeaderKey(name))
		}
	}
	return nil
}

// isTokenChar reports whether r may appear in an HTTP header name (RFC 9110
// tchar).
func isTokenChar(r rune) bool {
	return r < 0x7f && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("!#$%&'*+-.^_`|~", r))
}

// reservedHeader reports whether the sender sets the named header itself.
func reservedHeader(name string) bool {
	switch http.CanonicalHeaderKey(name) {
	case "Content-Type", "Content-Digest", "Content-Length", "Content-Encoding", "Transfer-Encoding",
		"Signature", "Signature-Input", "Authorization", "Host", "User-Agent", "Accept-Encoding", "Connection":
		return true
	}
	return strings.HasPrefix(strings.ToUpper(name), "X-ADCP-")
}

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

// prepare validates w and copies it; the copy is what gets stored.
func (p urlPolicy) prepare(w PreparedWebhook) (prepared, error) {
	if err := p.checkURL("URL", w.URL); err != nil {
		return prepared{}, err
	}
	if len(w.Body) > MaxBodyBytes {
		return prepared{}, &ValidationError{Field: "Body", Reason: fmt.Sprintf("is %d bytes; at most %d are accepted", len(w.Body), MaxBodyBytes), sentinel: ErrBodyTooLarge}
	}
	if !json.Valid(w.Body) {
		return prepared{}, invalid("Body", "is not valid JSON")
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

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// timestampLayout is RFC 3339 in UTC with milliseconds.
const timestampLayout = "2006-01-02T15:04:05.000Z07:00"

// BuildMCPBody validates w and returns the exact body SendMCP would send and
// the idempotency key inside it. now fills a zero Timestamp. Supervisors call
// it once per delivery; it is exported for receivers' tests and for sellers
// who store bodies themselves.
func BuildMCPBody(w MCPWebhook, now time.Time) (body []byte, key string, err error) {
	if err := checkText("OperationID", w.OperationID, true, 255); err != nil {
		return nil, "", err
	}
	if err := checkText("TaskID", w.TaskID, true, 255); err != nil {
		return nil, "", err
	}
	if w.TaskType == "" {
		return nil, "", invalid("TaskType", "is required; use a TaskType constant such as TaskCreateMediaBuy")
	}
	if !validTaskType(w.TaskType) {
		return nil, "", invalid("TaskType", "is %q; use a TaskType constant or a snake_case task name", w.TaskType)
	}
	if !w.Status.Valid() {
		return nil, "", invalid("Status", "is %q; use one of the nine Status constants, such as StatusCompleted", w.Status)
	}
	if w.Protocol != "" && !w.Protocol.Valid() {
		return nil, "", invalid("Protocol", "is %q; use a Protocol constant or leave it empty to derive it from TaskType", w.Protocol)
	}
	if w.Token != "" {
		if n := utf8.RuneCountInString(w.Token); n < 16 || n > 4096 {
			return nil, "", invalid("Token", "has %d characters; push_notification_config.token must have 16 to 4096", n)
		}
		if !utf8.ValidString(w.Token) {
			return nil, "", invalid("Token", "is not valid UTF-8")
		}
	}
	if err := checkText("ContextID", w.ContextID, false, 1024); err != nil {
		return nil, "", err
	}
	if w.Message != "" && !utf8.ValidString(w.Message) {
		return nil, "", invalid("Message", "is not valid UTF-8")
	}
	nid := w.NotificationID
	if nid != "" && !validKeyChars(nid, 1, 255) {
		return nil, "", invalid("NotificationID", "must match ^[A-Za-z0-9_.:-]{1,255}$ (got %q)", nid)
	}
	if nid == "" && w.Status.Terminal() {
		// The default is omitted when the task ID cannot form a valid one.
		if def := w.TaskID + ".terminal"; validKeyChars(def, 1, 255) {
			nid = def
		}
	}
	key = w.IdempotencyKey
	if key == "" {
		key = NewIdempotencyKey()
	} else if err := checkKey("IdempotencyKey", key); err != nil {
		return nil, "", err
	}
	var result []byte
	if w.Result != nil {
		if raw, ok := w.Result.(json.RawMessage); ok {
			if raw == nil {
				// A nil RawMessage omits the member, like a nil Result.
			} else if !json.Valid(raw) {
				return nil, "", invalid("Result", "is a json.RawMessage that is not valid JSON")
			}
			result = raw
		} else {
			var err error
			if result, err = marshalCompact(w.Result); err != nil {
				return nil, "", invalid("Result", "does not marshal to JSON: %v", err)
			}
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
	if result != nil {
		b = append(b, `,"result":`...)
		b = append(b, result...)
	}
	b = append(b, '}')
	if len(b) > MaxBodyBytes {
		return nil, "", &ValidationError{Field: "Result", Reason: fmt.Sprintf("makes a %d-byte body; at most %d are accepted", len(b), MaxBodyBytes), sentinel: ErrBodyTooLarge}
	}
	return b, key, nil
}

// marshalCompact marshals v without HTML escaping and without the encoder's
// trailing newline.
func marshalCompact(v any) ([]byte, error) {
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
