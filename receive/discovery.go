package receive

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/adcpkit/webhook/internal/ssrf"
	"github.com/adcpkit/webhook/internal/strictjson"
)

// Key discovery: a seller's keys fetched from its operator's brand.json
// agents[] entry (or a pinned jwks_uri), cached, refetched on an unknown
// kid, and its signed revocation list polled.

// ErrKeysUnavailable is wrapped by a [*DiscoveryError]: the seller's keys
// or revocation list could not be fetched or understood. A [Handler]
// answers 503 for it, so the seller retries.
var ErrKeysUnavailable = errors.New("receive: the seller's keys are unavailable")

// DiscoveryError says which fetch failed and why. Its URL has no
// credentials, query or fragment.
type DiscoveryError struct {
	URL    string
	Reason string
	// gone: the JWKS answered 404 or 410 (twice in a row, the keys held
	// are dropped rather than left to serve through an outage).
	gone bool
	// delisted: brand.json lists no entry for the agent.
	delisted bool
}

// Error names the URL and the reason.
func (e *DiscoveryError) Error() string {
	return "receive: key discovery: " + e.URL + ": " + e.Reason
}

// Unwrap returns [ErrKeysUnavailable].
func (e *DiscoveryError) Unwrap() error { return ErrKeysUnavailable }

// Budgets of key discovery, from the AdCP security profile.
const (
	// RevocationListType is the typ of a revocation list's JWS header.
	RevocationListType = "adcp-gov-revocation+jws"
	// MaxJWKSBytes bounds a fetched JWKS.
	MaxJWKSBytes = 64 << 10
	// MaxBrandJSONBytes bounds a fetched brand.json.
	MaxBrandJSONBytes = 256 << 10
	// MaxRevocationListBytes bounds a fetched revocation list.
	MaxRevocationListBytes = 256 << 10
	// RefetchCooldown is the least time between two fetches a webhook can
	// cause: a refetch for an unknown kid, or a retry after a failure.
	RefetchCooldown = 30 * time.Second
	// DiscoveryMaxAgeDefault is how long fetched keys are used, at most,
	// unless DiscoveryConfig.MaxAge says otherwise.
	DiscoveryMaxAgeDefault = 5 * time.Minute
	// DiscoveryMaxAgeCeiling is the revocation list's polling ceiling,
	// which bounds every cache of keys.
	DiscoveryMaxAgeCeiling = 30 * time.Minute
)

// Resolver resolves host names; *net.Resolver satisfies it.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// DiscoveryConfig configures [NewKeyDiscovery] for one seller agent.
type DiscoveryConfig struct {
	// Agent is the seller agent's URL, as the integration knows it; it
	// must byte-equal the url of exactly one agents[] entry of
	// BrandJSONURL. Required.
	Agent string
	// BrandJSONURL is the seller operator's brand.json (from onboarding,
	// or the agent's identity.brand_json_url). The matched entry's
	// jwks_uri (by default {origin of Agent}/.well-known/jwks.json) is
	// pinned on first use: a later brand.json naming another jwks_uri is
	// logged as an alarm and not adopted.
	BrandJSONURL string
	// JWKSURL pins the jwks_uri instead of (or as well as) reading it from
	// brand.json. One of the two is required.
	JWKSURL string
	// RevocationURL, when set, is the operator's signed revocation list
	// ({"payload","signatures"} JWS, signed by a key of the JWKS), polled
	// on its next_update (clamped to 1-30 min); revoked_kids are refused
	// with CodeKeyRevoked, and a list not refreshed within next_update
	// plus 4 polling intervals makes every signature CodeRevocationStale.
	RevocationURL string
	// MaxAge bounds how long fetched keys and brand.json are used before
	// they are fetched again; the responses' Cache-Control or Expires may
	// shorten it, down to RefetchCooldown. Defaults to
	// DiscoveryMaxAgeDefault; at most DiscoveryMaxAgeCeiling.
	MaxAge time.Duration
	// Timeout bounds each fetch. Defaults to 10 s.
	Timeout time.Duration
	// AllowPrivateDestinations lets fetches reach loopback and private
	// addresses, for local development and tests; cloud metadata and
	// other reserved addresses are never reached.
	AllowPrivateDestinations bool
	// AllowInsecureHTTP accepts http:// URLs, for tests.
	AllowInsecureHTTP bool
	// Resolver resolves host names. Defaults to net.DefaultResolver.
	Resolver Resolver
	// Logger receives failures and alarms (a changed jwks_uri).
	// Defaults to slog.Default().
	Logger *slog.Logger
	// Now is the clock. Defaults to time.Now.
	Now func() time.Time
}

// KeyDiscovery fetches one seller agent's keys and revocation list
// through a client that reaches only public addresses over HTTPS, without
// redirects, within size and time budgets. Give it to
// [VerifierConfig.Discovery]. Keys are fetched when first needed and again
// once they expire; a signature under an unknown kid refetches them at
// once, at most every RefetchCooldown. Run refreshes them ahead of use. It
// is safe for concurrent use.
type KeyDiscovery struct {
	agent, brandURL, revURL string
	maxAge                  time.Duration
	client                  *http.Client
	log                     *slog.Logger
	now                     func() time.Time

	fetchMu sync.Mutex // one fetch of keys at a time
	revMu   sync.Mutex // one fetch of the revocation list at a time

	mu          sync.Mutex
	jwksURL     string // pinned
	keys        map[string]VerifyingKey
	gen         int       // bumped by each successful fetch of keys
	expires     time.Time // when the keys must be fetched again
	etag, lmod  string    // validators of the last JWKS
	failedAt    time.Time // the last failed fetch of keys
	refetchedAt time.Time // the last refetch for an unknown kid
	brandUntil  time.Time // brand.json's answer holds until then
	goneBefore  bool      // the last fetch of keys answered 404/410

	revoked     map[string]bool
	revUpdated  time.Time     // the held list's "updated"
	revPollAt   time.Time     // when to fetch it again: its next_update, clamped to 1-30 min from the fetch
	revStaleAt  time.Time     // its next_update plus 4 polling intervals: refused after; zero while none is held
	revInterval time.Duration // its polling interval, which bounds every cache of keys
	revFailedAt time.Time
}

// NewKeyDiscovery checks cfg and returns a KeyDiscovery; nothing is
// fetched until the keys are needed (or [KeyDiscovery.Refresh] or Run).
func NewKeyDiscovery(cfg DiscoveryConfig) (*KeyDiscovery, error) {
	checkURL := func(field, raw string) error {
		if raw == "" {
			return nil
		}
		u, err := url.Parse(raw)
		if err != nil || u.Host == "" || (u.Scheme != "https" && !(cfg.AllowInsecureHTTP && u.Scheme == "http")) {
			return badConfig(field, "is not an absolute https URL")
		}
		return nil
	}
	switch {
	case cfg.Agent == "":
		return nil, badConfig("DiscoveryConfig.Agent", "is empty; set it to the seller agent's URL from your integration")
	case cfg.BrandJSONURL == "" && cfg.JWKSURL == "":
		return nil, badConfig("DiscoveryConfig.BrandJSONURL", "and JWKSURL are both empty; set the seller operator's brand.json URL, or a jwks_uri pinned at onboarding")
	case cfg.MaxAge < 0 || cfg.MaxAge > DiscoveryMaxAgeCeiling:
		return nil, badConfig("DiscoveryConfig.MaxAge", "is %v; use up to %v, or zero for %v", cfg.MaxAge, DiscoveryMaxAgeCeiling, DiscoveryMaxAgeDefault)
	case cfg.Timeout < 0:
		return nil, badConfig("DiscoveryConfig.Timeout", "is %v; use a positive duration, or zero for 10s", cfg.Timeout)
	}
	for _, f := range [][2]string{{"DiscoveryConfig.Agent", cfg.Agent}, {"DiscoveryConfig.BrandJSONURL", cfg.BrandJSONURL},
		{"DiscoveryConfig.JWKSURL", cfg.JWKSURL}, {"DiscoveryConfig.RevocationURL", cfg.RevocationURL}} {
		if err := checkURL(f[0], f[1]); err != nil {
			return nil, err
		}
	}
	d := &KeyDiscovery{agent: cfg.Agent, brandURL: cfg.BrandJSONURL, revURL: cfg.RevocationURL, jwksURL: cfg.JWKSURL,
		maxAge: cfg.MaxAge, log: cfg.Logger, now: cfg.Now}
	if d.maxAge == 0 {
		d.maxAge = DiscoveryMaxAgeDefault
	}
	if d.log == nil {
		d.log = slog.Default()
	}
	if d.now == nil {
		d.now = time.Now
	}
	timeout := cfg.Timeout
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	var resolver ssrf.Resolver = net.DefaultResolver
	if cfg.Resolver != nil {
		resolver = cfg.Resolver
	}
	dialer := &ssrf.Dialer{Dialer: &net.Dialer{Timeout: min(timeout, 5*time.Second)}, Resolver: resolver,
		AllowPrivate: cfg.AllowPrivateDestinations, Blocked: ErrKeysUnavailable,
		PrivateHint: "for local development set DiscoveryConfig.AllowPrivateDestinations"}
	d.client = &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			Proxy:                 nil,
			DialContext:           dialer.DialContext,
			ForceAttemptHTTP2:     true,
			TLSHandshakeTimeout:   timeout,
			ResponseHeaderTimeout: timeout,
			MaxIdleConnsPerHost:   2,
			IdleConnTimeout:       90 * time.Second,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return d, nil
}

// Agent returns the seller agent's URL.
func (d *KeyDiscovery) Agent() string { return d.agent }

// Refresh fetches the keys now (and the revocation list, when there is
// one), whatever their age: for a warm start before serving.
func (d *KeyDiscovery) Refresh(ctx context.Context) error {
	d.mu.Lock()
	gen := d.gen
	d.mu.Unlock()
	if err := d.fetchKeys(ctx, gen); err != nil {
		return err
	}
	if d.revURL != "" {
		return d.fetchRevocations(ctx, fetchForce, d.now())
	}
	return nil
}

// Run refreshes the keys before they expire and the revocation list on
// its next_update, until ctx is done; failures are logged and retried
// every RefetchCooldown. It returns nil when ctx ends.
func (d *KeyDiscovery) Run(ctx context.Context) error {
	for {
		now := d.now()
		d.mu.Lock()
		due := d.expires
		if d.revURL != "" && (due.IsZero() || d.revPollAt.Before(due)) {
			due = d.revPollAt
		}
		failed := d.failedAt
		if d.revFailedAt.After(failed) {
			failed = d.revFailedAt
		}
		d.mu.Unlock()
		lead := min(d.client.Timeout, d.maxAge/4, 15*time.Second) // refresh ahead of use
		wait := due.Add(-lead).Sub(now)
		if r := failed.Add(RefetchCooldown).Sub(now); r > wait {
			wait = r
		}
		if wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-t.C:
			}
		} else if ctx.Err() != nil {
			return nil
		}
		now = d.now()
		d.mu.Lock()
		keysDue, gen := !now.Add(lead).Before(d.expires), d.gen
		d.mu.Unlock()
		if keysDue {
			_ = d.fetchKeys(ctx, gen) // logged
		}
		if d.revURL != "" {
			_ = d.fetchRevocations(ctx, fetchWait, now.Add(lead)) // when due by then; logged
		}
	}
}

// lookup returns the key for kid: from the cache while it is fresh, after
// a fetch once it is not, and after one refetch (at most every
// RefetchCooldown) when kid is unknown. A kid still unknown is a
// [*VerifyError] with CodeKeyUnknown; keys that cannot be fetched, a
// [*DiscoveryError].
func (d *KeyDiscovery) lookup(ctx context.Context, kid string) (VerifyingKey, error) {
	now := d.now()
	d.mu.Lock()
	k, ok := d.keys[kid]
	stale, gen := !now.Before(d.expires), d.gen
	d.mu.Unlock()
	if !stale && ok {
		return k, nil
	}
	if stale {
		err := d.fetchKeys(ctx, gen)
		d.mu.Lock()
		k, ok = d.keys[kid]
		gen = d.gen
		// Through an outage the last good keys serve for one more MaxAge.
		usable := ok && (err == nil || now.Before(d.expires.Add(d.maxAge)))
		d.mu.Unlock()
		switch {
		case usable:
			return k, nil
		case err != nil:
			return VerifyingKey{}, err
		}
	}
	d.mu.Lock()
	refetch := now.Sub(d.refetchedAt) >= RefetchCooldown // Sub saturates: a zero time passes
	if refetch {
		d.refetchedAt = now
	}
	d.mu.Unlock()
	if refetch {
		if err := d.fetchKeys(ctx, gen); err != nil {
			return VerifyingKey{}, err
		}
		d.mu.Lock()
		k, ok = d.keys[kid]
		d.mu.Unlock()
		if ok {
			return k, nil
		}
	}
	return VerifyingKey{}, reject(CodeKeyUnknown, 7, "no key with keyid %q in the seller's JWKS (refetched at most every %v)", kid, RefetchCooldown)
}

// fetchKeys fetches the JWKS, unless another fetch completed since the
// caller saw generation gen; a failure less than RefetchCooldown after
// the last one is not retried.
func (d *KeyDiscovery) fetchKeys(ctx context.Context, gen int) error {
	d.fetchMu.Lock()
	defer d.fetchMu.Unlock()
	d.mu.Lock()
	done, failedAt := d.gen != gen, d.failedAt
	d.mu.Unlock()
	if done {
		return nil
	}
	now := d.now()
	if !failedAt.IsZero() && now.Sub(failedAt) < RefetchCooldown {
		return &DiscoveryError{URL: redact(d.currentJWKSURL()), Reason: "the last fetch failed less than " + RefetchCooldown.String() + " ago"}
	}
	// Detached: a caller that hangs up (it may be anyone: keys are
	// fetched before any cryptography) does not fail the fetch for
	// everyone else. The client's timeout bounds it.
	err := d.fetchKeysLocked(context.WithoutCancel(ctx), now)
	d.mu.Lock()
	var de *DiscoveryError
	switch {
	case errors.As(err, &de) && (de.delisted || de.gone && d.goneBefore):
		// de-listed, or the JWKS answered 404/410 twice in a row (at least
		// RefetchCooldown apart): not a CDN's passing glitch
		d.keys, d.expires = nil, time.Time{}
	}
	d.goneBefore = de != nil && de.gone
	if err != nil {
		d.failedAt = now
	} else {
		d.failedAt = time.Time{}
	}
	d.mu.Unlock()
	if err != nil {
		d.log.LogAttrs(ctx, slog.LevelWarn, "receive: fetching the seller's keys failed", slog.String("agent", d.agent), slog.Any("error", err))
	}
	return err
}

func (d *KeyDiscovery) currentJWKSURL() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.jwksURL != "" {
		return d.jwksURL
	}
	return d.brandURL
}

func (d *KeyDiscovery) fetchKeysLocked(ctx context.Context, now time.Time) error {
	d.mu.Lock()
	brandDue := d.brandURL != "" && !now.Before(d.brandUntil)
	d.mu.Unlock()
	if brandDue {
		if err := d.resolveBrand(ctx, now); err != nil {
			var de *DiscoveryError
			d.mu.Lock()
			pinned := d.jwksURL != ""
			if pinned {
				d.brandUntil = now.Add(RefetchCooldown)
			}
			d.mu.Unlock()
			if !pinned || errors.As(err, &de) && de.delisted {
				return err
			}
			d.log.LogAttrs(ctx, slog.LevelWarn, "receive: brand.json is unavailable; refreshing the pinned jwks_uri", slog.String("agent", d.agent), slog.Any("error", err))
		}
	}
	d.mu.Lock()
	jwksURL, etag, lmod := d.jwksURL, d.etag, d.lmod
	if d.keys == nil {
		etag, lmod = "", ""
	}
	d.mu.Unlock()
	resp, err := d.get(ctx, jwksURL, MaxJWKSBytes, etag, lmod)
	if err != nil {
		return err
	}
	ttl := d.ttl(resp.header, now)
	if resp.status == http.StatusNotModified {
		d.mu.Lock()
		d.expires, d.gen = now.Add(ttl), d.gen+1
		d.mu.Unlock()
		return nil
	}
	if err := strictjson.Check(resp.body); err != nil {
		return &DiscoveryError{URL: redact(jwksURL), Reason: "the JWKS is not strict JSON: " + err.Error()}
	}
	keys, err := ParseJWKS(resp.body)
	if err != nil {
		return &DiscoveryError{URL: redact(jwksURL), Reason: err.Error()}
	}
	set := make(map[string]VerifyingKey, len(keys))
	for _, k := range keys {
		if _, dup := set[k.KeyID]; dup {
			return &DiscoveryError{URL: redact(jwksURL), Reason: fmt.Sprintf("kid %q appears twice; a kid must resolve to one key", k.KeyID)}
		}
		set[k.KeyID] = k
	}
	d.mu.Lock()
	d.keys, d.expires, d.gen = set, now.Add(ttl), d.gen+1
	d.etag, d.lmod = resp.header.Get("ETag"), resp.header.Get("Last-Modified")
	d.mu.Unlock()
	return nil
}

// resolveBrand reads brand.json and pins the agent's jwks_uri.
func (d *KeyDiscovery) resolveBrand(ctx context.Context, now time.Time) error {
	type agent struct {
		URL     *string `json:"url"`
		JWKSURI *string `json:"jwks_uri"`
	}
	var doc struct {
		Agents                []agent `json:"agents"`
		AuthoritativeLocation string  `json:"authoritative_location"`
	}
	from := d.brandURL
	var resp fetched
	for hop := 0; ; hop++ {
		var err error
		resp, err = d.get(ctx, from, MaxBrandJSONBytes, "", "")
		if err != nil {
			var de *DiscoveryError
			if errors.As(err, &de) {
				de.gone = false // a missing brand.json is an outage, not a de-listing
			}
			return err
		}
		if err := strictjson.Check(resp.body); err != nil {
			return &DiscoveryError{URL: redact(from), Reason: "brand.json is not strict JSON: " + err.Error()}
		}
		doc.Agents, doc.AuthoritativeLocation = nil, ""
		if err := json.Unmarshal(resp.body, &doc); err != nil {
			return &DiscoveryError{URL: redact(from), Reason: "brand.json does not parse: " + err.Error()}
		}
		if doc.Agents != nil || doc.AuthoritativeLocation == "" {
			break
		}
		if hop == 1 {
			return &DiscoveryError{URL: redact(from), Reason: "brand.json redirects twice (authoritative_location); one redirect is followed"}
		}
		u, err := url.Parse(doc.AuthoritativeLocation)
		if err != nil || u.Scheme != "https" && !(u.Scheme == "http" && strings.HasPrefix(d.brandURL, "http:")) || u.Host == "" {
			return &DiscoveryError{URL: redact(from), Reason: "authoritative_location is not an absolute https URL"}
		}
		from = doc.AuthoritativeLocation
	}
	var matched []agent
	for _, a := range doc.Agents {
		if a.URL != nil && *a.URL == d.agent {
			matched = append(matched, a)
		}
	}
	switch len(matched) {
	case 0:
		return &DiscoveryError{URL: redact(from), Reason: "no agents[] entry has url " + strconv.Quote(d.agent) + " (byte for byte)", gone: true, delisted: true}
	case 1:
	default:
		return &DiscoveryError{URL: redact(from), Reason: fmt.Sprintf("%d agents[] entries have url %q; one is required", len(matched), d.agent)}
	}
	jwks := ""
	if matched[0].JWKSURI != nil {
		jwks = *matched[0].JWKSURI
	} else {
		u, _ := url.Parse(d.agent) // checked by NewKeyDiscovery
		jwks = u.Scheme + "://" + u.Host + "/.well-known/jwks.json"
	}
	if u, err := url.Parse(jwks); err != nil || u.Host == "" || u.Scheme != "https" && !(u.Scheme == "http" && strings.HasPrefix(d.brandURL, "http:")) {
		return &DiscoveryError{URL: redact(from), Reason: "the agent's jwks_uri is not an absolute https URL"}
	}
	ttl := d.ttl(resp.header, now)
	d.mu.Lock()
	pinned := d.jwksURL
	if pinned == "" {
		d.jwksURL = jwks
	}
	d.brandUntil = now.Add(ttl)
	d.mu.Unlock()
	if pinned != "" && pinned != jwks {
		d.log.LogAttrs(ctx, slog.LevelWarn, "receive: ALARM: the seller's brand.json names another jwks_uri than the pinned one; keeping the pinned one until an operator re-anchors it",
			slog.String("agent", d.agent), slog.String("pinned", redact(pinned)), slog.String("brand_json", redact(jwks)))
	}
	return nil
}

// fetched is one response.
type fetched struct {
	status int
	header http.Header
	body   []byte
}

// get fetches raw (200, or 304 for a conditional request) within limit
// bytes.
func (d *KeyDiscovery) get(ctx context.Context, raw string, limit int64, etag, lmod string) (fetched, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, raw, nil)
	if err != nil {
		return fetched{}, &DiscoveryError{URL: redact(raw), Reason: "bad URL"}
	}
	req.Header.Set("Accept", "application/json")
	if etag != "" {
		req.Header.Set("If-None-Match", etag)
	}
	if lmod != "" {
		req.Header.Set("If-Modified-Since", lmod)
	}
	resp, err := d.client.Do(req)
	if err != nil {
		reason := "the request failed"
		if errors.Is(err, ErrKeysUnavailable) {
			reason = "the address is not allowed (SSRF protection)"
		} else if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
			reason = "the request timed out"
		}
		return fetched{}, &DiscoveryError{URL: redact(raw), Reason: reason}
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotModified && (etag != "" || lmod != "") {
		return fetched{status: resp.StatusCode, header: resp.Header}, nil
	}
	if resp.StatusCode != http.StatusOK {
		gone := resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusGone
		return fetched{}, &DiscoveryError{URL: redact(raw), Reason: "status " + strconv.Itoa(resp.StatusCode) + " (redirects are not followed)", gone: gone}
	}
	if resp.ContentLength > limit {
		return fetched{}, &DiscoveryError{URL: redact(raw), Reason: fmt.Sprintf("the response is larger than %d bytes", limit)}
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return fetched{}, &DiscoveryError{URL: redact(raw), Reason: "the response could not be read"}
	}
	if int64(len(body)) > limit {
		return fetched{}, &DiscoveryError{URL: redact(raw), Reason: fmt.Sprintf("the response is larger than %d bytes", limit)}
	}
	return fetched{status: resp.StatusCode, header: resp.Header, body: body}, nil
}

// ttl is how long a response may be used: its Cache-Control max-age (or
// Expires), within [RefetchCooldown, MaxAge].
func (d *KeyDiscovery) ttl(h http.Header, now time.Time) time.Duration {
	ttl := d.maxAge
	cc := strings.ToLower(h.Get("Cache-Control"))
	found := false
	for _, dir := range strings.Split(cc, ",") {
		dir = strings.TrimSpace(dir)
		switch {
		case dir == "no-store" || dir == "no-cache":
			ttl, found = 0, true
		case strings.HasPrefix(dir, "max-age="):
			if n, err := strconv.ParseInt(strings.Trim(dir[len("max-age="):], `"`), 10, 64); err == nil && !found {
				ttl, found = time.Duration(min(n, int64(DiscoveryMaxAgeCeiling/time.Second)))*time.Second, true
			}
		}
	}
	if !found {
		if exp, err := http.ParseTime(h.Get("Expires")); err == nil {
			ttl = exp.Sub(now)
		}
	}
	limit := d.maxAge
	d.mu.Lock()
	if d.revInterval > 0 { // bounded by the revocation list's polling interval
		limit = min(limit, d.revInterval)
	}
	d.mu.Unlock()
	return min(max(ttl, RefetchCooldown), limit)
}

// redact is a URL without credentials, query or fragment, for errors and
// logs.
func redact(raw string) string {
	if i := strings.IndexAny(raw, "?#"); i >= 0 {
		raw = raw[:i]
	}
	if scheme, rest, ok := strings.Cut(raw, "://"); ok {
		authority, path, _ := strings.Cut(rest, "/")
		if at := strings.LastIndexByte(authority, '@'); at >= 0 {
			authority = authority[at+1:]
		}
		raw = scheme + "://" + authority
		if path != "" || strings.Contains(rest, "/") {
			raw += "/" + path
		}
	}
	return raw
}

// CheckKey implements [KeyRevocations] from the revocation list at
// DiscoveryConfig.RevocationURL (every key passes when there is none). The
// list is fetched when first needed and again once its next_update passes
// (by Run ahead of webhooks, if it runs), at most every RefetchCooldown
// after a failure. Until a list is held, CheckKey returns a
// [*DiscoveryError] (the Handler answers 503, and the seller retries); a
// held list past its next_update plus 4 polling intervals makes every key
// [CodeRevocationStale].
func (d *KeyDiscovery) CheckKey(ctx context.Context, keyID string, now time.Time) error {
	if d.revURL == "" {
		return nil
	}
	if d.revDue(now) {
		d.mu.Lock()
		usable := !d.revStaleAt.IsZero() && !now.After(d.revStaleAt)
		d.mu.Unlock()
		if usable { // the held list decides; whoever holds revMu (Run, another webhook) refreshes it
			_ = d.fetchRevocations(ctx, fetchIfFree, d.now())
		} else {
			_ = d.fetchRevocations(ctx, fetchWait, d.now()) // logged; the state below decides
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case d.revStaleAt.IsZero(): // none held
		return &DiscoveryError{URL: redact(d.revURL), Reason: "no revocation list has been fetched yet"}
	case now.After(d.revStaleAt):
		return reject(CodeRevocationStale, 9, "the seller's revocation list was due at %s and no newer one has been fetched by %s (grace: 4 polling intervals)",
			d.revPollAt.UTC().Format(time.RFC3339), d.revStaleAt.UTC().Format(time.RFC3339))
	case d.revoked[keyID]:
		return reject(CodeKeyRevoked, 9, "key %q is in the seller's revoked_kids", keyID)
	}
	return nil
}

// revDue reports whether the revocation list should be fetched at now: none
// is held, or its next_update passed, and the last failure is older than
// RefetchCooldown.
func (d *KeyDiscovery) revDue(now time.Time) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	due := d.revStaleAt.IsZero() || !now.Before(d.revPollAt)
	return due && (d.revFailedAt.IsZero() || now.Sub(d.revFailedAt) >= RefetchCooldown)
}

// fetchRevocations fetches, verifies and adopts the revocation list, if it
// is still due once the caller holds the fetch: concurrent callers make one
// fetch.
type fetchMode int

const (
	fetchWait   fetchMode = iota // wait for a fetch in flight, then fetch if still due
	fetchIfFree                  // return at once if a fetch is in flight
	fetchForce                   // fetch whether or not due (Refresh)
)

func (d *KeyDiscovery) fetchRevocations(ctx context.Context, mode fetchMode, dueBy time.Time) error {
	if mode == fetchIfFree {
		if !d.revMu.TryLock() {
			return nil
		}
	} else {
		d.revMu.Lock()
	}
	defer d.revMu.Unlock()
	now := d.now()
	if dueBy.Before(now) {
		dueBy = now
	}
	if mode != fetchForce && !d.revDue(dueBy) {
		return nil
	}
	err := d.fetchRevocationsLocked(context.WithoutCancel(ctx), now) // see fetchKeys
	d.mu.Lock()
	if err != nil {
		d.revFailedAt = now
	} else {
		d.revFailedAt = time.Time{}
	}
	d.mu.Unlock()
	if err != nil {
		d.log.LogAttrs(ctx, slog.LevelWarn, "receive: fetching the seller's revocation list failed", slog.String("agent", d.agent), slog.Any("error", err))
	}
	return err
}

func (d *KeyDiscovery) fetchRevocationsLocked(ctx context.Context, now time.Time) error {
	resp, err := d.get(ctx, d.revURL, MaxRevocationListBytes, "", "")
	if err != nil {
		return err
	}
	bad := func(format string, args ...any) error {
		return &DiscoveryError{URL: redact(d.revURL), Reason: fmt.Sprintf(format, args...)}
	}
	var protected, payload, signature string
	if s := strings.TrimSpace(string(resp.body)); !strings.HasPrefix(s, "{") {
		parts := strings.Split(s, ".") // compact serialisation
		if len(parts) != 3 {
			return bad("the revocation list is neither a JWS JSON object nor a compact JWS")
		}
		protected, payload, signature = parts[0], parts[1], parts[2]
	} else {
		if err := strictjson.Check(resp.body); err != nil {
			return bad("the revocation list is not strict JSON: %v", err)
		}
		var jws struct {
			Payload    string `json:"payload"`
			Protected  string `json:"protected"`
			Signature  string `json:"signature"`
			Signatures []struct {
				Protected string `json:"protected"`
				Signature string `json:"signature"`
			} `json:"signatures"`
		}
		if err := json.Unmarshal(resp.body, &jws); err != nil {
			return bad("the revocation list does not parse: %v", err)
		}
		payload, protected, signature = jws.Payload, jws.Protected, jws.Signature
		if len(jws.Signatures) > 0 {
			if len(jws.Signatures) != 1 || protected != "" {
				return bad("the revocation list must carry exactly one signature")
			}
			protected, signature = jws.Signatures[0].Protected, jws.Signatures[0].Signature
		}
	}
	hdrJSON, err1 := base64.RawURLEncoding.DecodeString(protected)
	body, err2 := base64.RawURLEncoding.DecodeString(payload)
	sig, err3 := base64.RawURLEncoding.DecodeString(signature)
	if err := errors.Join(err1, err2, err3); err != nil {
		return bad("the revocation list's JWS parts are not unpadded base64url")
	}
	var hdr struct {
		Alg string `json:"alg"`
		Kid string `json:"kid"`
		Typ string `json:"typ"`
	}
	if strictjson.Check(hdrJSON) != nil || json.Unmarshal(hdrJSON, &hdr) != nil {
		return bad("the revocation list's protected header does not parse")
	}
	if hdr.Typ != RevocationListType {
		return bad("the revocation list's typ is %q, not %q", hdr.Typ, RevocationListType)
	}
	want := map[string]string{"EdDSA": AlgEd25519, "ES256": AlgECDSAP256}[hdr.Alg]
	if want == "" {
		return bad("the revocation list is signed with alg %q; EdDSA or ES256 is required", hdr.Alg)
	}
	key, err := d.signingKey(ctx, hdr.Kid)
	if err != nil {
		return err
	}
	if key.Alg != want || !slices.Contains(key.KeyOps, "verify") || !verifySignature(key, []byte(protected+"."+payload), sig) {
		return bad("the revocation list's signature does not verify with key %q of the seller's JWKS", hdr.Kid)
	}
	if err := strictjson.Check(body); err != nil {
		return bad("the revocation list's payload is not strict JSON: %v", err)
	}
	var list struct {
		Issuer      string    `json:"issuer"`
		Updated     time.Time `json:"updated"`
		NextUpdate  time.Time `json:"next_update"`
		RevokedKids []string  `json:"revoked_kids"`
	}
	if err := json.Unmarshal(body, &list); err != nil || list.Updated.IsZero() || list.NextUpdate.IsZero() {
		return bad("the revocation list's payload lacks updated or next_update")
	}
	if !d.sameOrigin(list.Issuer) {
		return bad("the revocation list's issuer %q is not the seller agent's or its brand.json's origin", list.Issuer)
	}
	if slices.Contains(list.RevokedKids, hdr.Kid) {
		return bad("the revocation list is signed by kid %q, which it revokes", hdr.Kid)
	}
	if list.Updated.After(now.Add(DiscoveryMaxAgeCeiling)) { // a fast clock is tolerated, a list from tomorrow is not
		return bad("the revocation list's updated (%s) is in the future", list.Updated.UTC().Format(time.RFC3339))
	}
	// The grace counts from the list's own next_update: a list the
	// operator stopped updating goes stale however often it is fetched.
	interval := list.NextUpdate.Sub(list.Updated)
	if interval > DiscoveryMaxAgeCeiling { // "updated" is when the content changed, not when the list was issued
		interval = list.NextUpdate.Sub(now)
	}
	interval = min(max(interval, time.Minute), DiscoveryMaxAgeCeiling)
	staleAt := list.NextUpdate.Add(4 * interval)
	if !now.Before(staleAt) {
		return bad("the revocation list is itself stale: its next_update (%s) passed more than 4 polling intervals ago", list.NextUpdate.UTC().Format(time.RFC3339))
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.revoked[hdr.Kid] {
		return bad("the revocation list is signed by kid %q, which the list held revokes", hdr.Kid)
	}
	if list.Updated.Before(d.revUpdated) {
		return bad("the revocation list is older (updated %s) than the one held (%s); a rollback is refused",
			list.Updated.UTC().Format(time.RFC3339), d.revUpdated.UTC().Format(time.RFC3339))
	}
	d.revoked = make(map[string]bool, len(list.RevokedKids))
	for _, k := range list.RevokedKids {
		d.revoked[k] = true
	}
	d.revUpdated, d.revStaleAt, d.revInterval = list.Updated, staleAt, interval
	d.revPollAt = now.Add(min(max(list.NextUpdate.Sub(now), time.Minute), DiscoveryMaxAgeCeiling))
	// A key's cache never outlives the polling interval.
	if limit := now.Add(interval); d.expires.After(limit) {
		d.expires = limit
	}
	return nil
}

// signingKey is the JWKS key kid, for the revocation list's signature
// (whatever its adcp_use: the list is signed by a key of the same JWKS).
func (d *KeyDiscovery) signingKey(ctx context.Context, kid string) (VerifyingKey, error) {
	k, err := d.lookup(ctx, kid)
	var ve *VerifyError
	if errors.As(err, &ve) {
		return VerifyingKey{}, &DiscoveryError{URL: redact(d.revURL), Reason: fmt.Sprintf("the revocation list is signed by kid %q, which the seller's JWKS lacks", kid)}
	}
	return k, err
}

// sameOrigin reports whether issuer's origin is the agent's or brand.json's.
func (d *KeyDiscovery) sameOrigin(issuer string) bool {
	origin := func(raw string) string {
		u, err := url.Parse(raw)
		if err != nil || u.Host == "" {
			return ""
		}
		return strings.ToLower(u.Scheme + "://" + u.Host)
	}
	o := origin(issuer)
	return o != "" && (o == origin(d.agent) || d.brandURL != "" && o == origin(d.brandURL))
}
