package webhook

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/adcpkit/webhook/internal/canon"
	"github.com/adcpkit/webhook/internal/ident"
)

// This file holds input validation: destination URLs, identifiers, legacy
// authentication and extra headers, checked before anything is stored or
// sent.

// urlPolicy is what the supervisor allows in destination URLs.
type urlPolicy struct {
	allowHTTP bool
	config    string // the supervisor config's name, for errors: "MemoryConfig."
	// tenants, when set, says whether a Routing.Tenant can be signed for:
	// the supervisor's Sender, when it is a TenantChecker.
	tenants TenantChecker
}

// checkRouting validates r, and that its tenant has a signing key.
func (p urlPolicy) checkRouting(r *Routing) error {
	if err := r.check(); err != nil {
		return err
	}
	if p.tenants != nil && r.Authentication == nil { // legacy authentication signs with no key
		if err := p.tenants.CheckTenant(r.Tenant); err != nil {
			return &ValidationError{Field: "Tenant", sentinel: ErrSigningKeyMissing,
				Reason: "cannot be signed for (" + strings.TrimPrefix(err.Error(), "webhook: ") + "); install the tenant's key before accepting its deliveries"}
		}
	}
	return nil
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
			return invalid(field, "uses plain http; use https, or for local development set HTTPSenderConfig.Development on the sender (or %sAllowInsecureHTTP)", cmpOr(p.config, "the supervisor config's "))
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
		return invalid(field, "cannot be signed (%v); percent-encode non-ASCII characters outside the host", err)
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
	if !ident.Valid(key, 16, 255) {
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
	return checkCredentials(a.Credentials)
}

// MaxCredentialsLength is the longest accepted legacy credential.
const MaxCredentialsLength = 4096

// minCredentialChars is how many different characters a credential must
// use: a secret of one repeated character (or two) is guessed, not
// exchanged.
const minCredentialChars = 8

// checkCredentials accepts MinCredentialsLength to MaxCredentialsLength
// visible ASCII characters (a Bearer token goes into a header line, where
// CR, LF or NUL would fail every attempt inside net/http and count against
// the breaker of every webhook sharing the URL), using at least
// minCredentialChars different ones. The error never quotes them.
func checkCredentials(c string) error {
	if n := len(c); n < MinCredentialsLength || n > MaxCredentialsLength {
		return invalid("Authentication.Credentials", "has %d bytes; use %d to %d visible ASCII characters", n, MinCredentialsLength, MaxCredentialsLength)
	}
	var seen [128]bool
	distinct := 0
	for i := 0; i < len(c); i++ {
		b := c[i]
		if b <= ' ' || b >= 0x7f {
			return invalid("Authentication.Credentials", "contains a space, a control character or a non-ASCII byte; use visible ASCII characters only")
		}
		if !seen[b] {
			seen[b] = true
			distinct++
		}
	}
	if distinct < minCredentialChars {
		return invalid("Authentication.Credentials", "uses %d different characters; a secret needs at least %d (generate it randomly)", distinct, minCredentialChars)
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
	if err := checkText("SubscriberID", r.SubscriberID, false, 255); err != nil {
		return err
	}
	if err := checkTenantName("Tenant", r.Tenant); err != nil {
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
	canonical := make(map[string]bool, len(h))
	for name := range h {
		if c := http.CanonicalHeaderKey(name); canonical[c] {
			return invalid("Headers", "names %s twice (in different cases); which one is sent would depend on map order", c)
		} else {
			canonical[c] = true
		}
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

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
