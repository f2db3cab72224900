// Package webhookui is an embeddable operator dashboard for a webhook
// supervisor: an [http.Handler] that a seller mounts behind its own
// authentication. It shows the queue (counts by state, the due backlog,
// open and failing breakers), lists deliveries with the Inspector's
// filters, shows a delivery with its attempts and exact body (secret
// members redacted; credentials and header values are never stored where
// it could show them), and acts: redeliver one delivery or every failed
// delivery a filter selects (after a dry-run count), reset a breaker.
//
// It is server-rendered with html/template from embedded files, with no
// JavaScript. It works on any [webhook.Inspector], so developers can watch
// a MemorySupervisor locally as operators watch the PostgresSupervisor.
//
// Actions are POSTs protected against cross-site request forgery twice:
// [http.CrossOriginProtection] refuses cross-origin browser requests, and
// every form carries a token bound to a per-browser cookie. [Config.ReadOnly]
// hides the actions and refuses them.
//
// Mount it on a path ending in "/", with that prefix stripped:
//
//	ui, err := webhookui.New(webhookui.Config{Inspector: sup})
//	mux.Handle("/ops/webhooks/", auth(http.StripPrefix("/ops/webhooks", ui)))
package webhookui

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/adcpkit/webhook"
)

// Config configures [New].
type Config struct {
	// Inspector is the supervisor to show. Required. A PostgresSupervisor
	// made with a nil Sender is enough: the dashboard sends nothing.
	Inspector webhook.Inspector
	// ReadOnly hides the actions (redeliver, reset) and refuses them.
	ReadOnly bool
	// CSRFKey signs the forms' tokens: at least 32 bytes. Every replica of
	// a dashboard behind one load balancer needs the same key. Default: a
	// random key per handler (tokens then last as long as the process).
	CSRFKey []byte
	// Title names the dashboard in its pages. Default "Webhooks".
	Title string
	// Logger receives failed actions and lookups. Default slog.Default().
	Logger *slog.Logger
	// Clock is the time the pages measure ages against. Default
	// time.Now.
	Clock func() time.Time
}

//go:embed templates/*.html static/*
var files embed.FS

// handler is the dashboard.
type handler struct {
	in       webhook.Inspector
	readOnly bool
	key      []byte
	title    string
	logger   *slog.Logger
	now      func() time.Time
	pages    map[string]*template.Template
	mux      *http.ServeMux
}

// New returns the dashboard for cfg.Inspector.
func New(cfg Config) (http.Handler, error) {
	if cfg.Inspector == nil {
		return nil, errors.New("webhookui: Config.Inspector is nil; pass the supervisor (a *webhook.PostgresSupervisor or *webhook.MemorySupervisor)")
	}
	h := &handler{in: cfg.Inspector, readOnly: cfg.ReadOnly, key: cfg.CSRFKey, title: cfg.Title, logger: cfg.Logger, now: cfg.Clock}
	switch {
	case h.key == nil:
		h.key = make([]byte, 32)
		if _, err := rand.Read(h.key); err != nil {
			return nil, err
		}
	case len(h.key) < 32:
		return nil, fmt.Errorf("webhookui: Config.CSRFKey is %d bytes; use at least 32 random bytes, or nil for a key per process", len(h.key))
	}
	if h.title == "" {
		h.title = "Webhooks"
	}
	if h.logger == nil {
		h.logger = slog.Default()
	}
	if h.now == nil {
		h.now = time.Now
	}
	if err := h.parse(); err != nil {
		return nil, err
	}
	static, err := fs.Sub(files, "static")
	if err != nil {
		return nil, err
	}
	m := http.NewServeMux()
	m.HandleFunc("GET /{$}", h.overview)
	m.HandleFunc("GET /deliveries", h.deliveries)
	m.HandleFunc("GET /deliveries/{id}", h.delivery)
	m.HandleFunc("GET /breakers", h.breakers)
	m.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	protect := http.NewCrossOriginProtection()
	action := func(f http.HandlerFunc) http.Handler { return protect.Handler(h.checkAction(f)) }
	m.Handle("POST /deliveries/{id}/redeliver", action(h.redeliver))
	m.Handle("POST /redeliver", action(h.redeliverMatching))
	m.Handle("POST /breakers/reset", action(h.reset))
	h.mux = m
	return h, nil
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Referrer-Policy", "same-origin")
	h.mux.ServeHTTP(w, r)
}

// csrfCookie holds a browser's random CSRF secret.
const csrfCookie = "webhookui_csrf"

// token returns the CSRF token for r's browser, setting its cookie first
// when it has none.
func (h *handler) token(w http.ResponseWriter, r *http.Request) string {
	c, err := r.Cookie(csrfCookie)
	secret := ""
	if err == nil && len(c.Value) == 43 {
		secret = c.Value
	} else {
		b := make([]byte, 32)
		_, _ = rand.Read(b) // crypto/rand does not fail
		secret = base64.RawURLEncoding.EncodeToString(b)
		// Secure when the browser reached us over TLS, here or at a proxy
		// (a wrong guess only keeps the cookie off plain http).
		secure := r.TLS != nil || strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https")
		http.SetCookie(w, &http.Cookie{Name: csrfCookie, Value: secret, Path: base(r) + "/", HttpOnly: true,
			Secure: secure, SameSite: http.SameSiteStrictMode})
	}
	return h.sign(secret)
}

func (h *handler) sign(secret string) string {
	m := hmac.New(sha256.New, h.key)
	m.Write([]byte("webhookui csrf\x00" + secret))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// checkAction refuses actions in read-only mode and without the form's
// token for the browser's cookie.
func (h *handler) checkAction(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if h.readOnly {
			http.Error(w, "this dashboard is read-only", http.StatusForbidden)
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
		c, err := r.Cookie(csrfCookie)
		if err != nil || subtle.ConstantTimeCompare([]byte(r.PostFormValue("csrf")), []byte(h.sign(c.Value))) != 1 {
			http.Error(w, "missing or invalid form token: reload the page and try again", http.StatusForbidden)
			return
		}
		next(w, r)
	}
}

// base is the path the handler is mounted at, without its trailing "/":
// the request's path before http.StripPrefix took it off ("" when it
// cannot tell, or the result would not be a plain local path).
func base(r *http.Request) string {
	orig, err := url.ParseRequestURI(r.RequestURI) // origin form, or absolute form
	if r.RequestURI == "" || err != nil {
		return ""
	}
	full, rest := orig.EscapedPath(), r.URL.EscapedPath()
	if !strings.HasSuffix(full, rest) {
		return ""
	}
	b := strings.TrimSuffix(full[:len(full)-len(rest)], "/")
	if b != "" && (!strings.HasPrefix(b, "/") || strings.HasPrefix(b, "//") || strings.ContainsAny(b, "\\?#")) {
		return ""
	}
	return b
}

// ref identifies a breaker in a form without showing its key (which can
// hold a URL's query): an HMAC of the key under the handler's key.
func (h *handler) ref(key string) string {
	m := hmac.New(sha256.New, h.key)
	m.Write([]byte("webhookui breaker\x00" + key))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}
