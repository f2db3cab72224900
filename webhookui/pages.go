package webhookui

import (
	"bytes"
	"crypto/hmac"
	"errors"
	"html/template"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/adcpkit/webhook"
	"github.com/adcpkit/webhook/internal/opsutil"
	"github.com/adcpkit/webhook/internal/showbody"
)

// page is what every template gets.
type page struct {
	Title    string
	Base     string // the mount path, without a trailing "/"
	CSRF     string
	ReadOnly bool
	Nav      string // the active section
	Notice   string // the outcome of the last action, from a fixed set
	Now      time.Time
	Data     any
}

var funcs = template.FuncMap{
	"loggable": webhook.LoggableURL,
	"ago": func(now, t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return now.Sub(t).Round(time.Second).String()
	},
	"when": func(t time.Time) string {
		if t.IsZero() {
			return "—"
		}
		return t.UTC().Format("2006-01-02 15:04:05Z")
	},
	"dur": func(d time.Duration) string { return d.Round(time.Second).String() },
	"ms":  func(d time.Duration) string { return strconv.FormatInt(d.Milliseconds(), 10) + " ms" },
	"status": func(n int) string {
		if n == 0 {
			return "—"
		}
		return strconv.Itoa(n)
	},
}

// parse parses each page with the layout.
func (h *handler) parse() error {
	h.pages = map[string]*template.Template{}
	for _, name := range []string{"overview", "deliveries", "delivery", "breakers", "confirm"} {
		t, err := template.New("layout.html").Funcs(funcs).Funcs(template.FuncMap{"ref": h.ref}).
			ParseFS(files, "templates/layout.html", "templates/"+name+".html")
		if err != nil {
			return err
		}
		h.pages[name] = t
	}
	return nil
}

// render writes the page name with data, or a 500.
func (h *handler) render(w http.ResponseWriter, r *http.Request, name, nav string, data any) {
	p := page{Title: h.title, Base: base(r), CSRF: h.token(w, r), ReadOnly: h.readOnly, Nav: nav,
		Notice: notices[r.URL.Query().Get("done")], Now: h.now(), Data: data}
	var buf bytes.Buffer
	if err := h.pages[name].Execute(&buf, p); err != nil {
		h.fail(w, r, "render "+name, err)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = buf.WriteTo(w)
}

// notices are the messages an action's redirect can ask for.
var notices = map[string]string{
	"redelivered": "Queued again under its own idempotency key; the workers will send it.",
	"reemitted":   "Re-emitted under a fresh idempotency key (past its retry horizon, or the receiver answered 409); this is the new delivery.",
	"reset":       "Breaker reset: it is closed, and its pending deliveries are due now.",
	"bulk":        "Redelivery done: see the counts below.",
}

// fail answers a failed lookup or action: 404 for an unknown delivery, 400
// for a bad filter, 500 (logged) otherwise. The error text shown never
// holds secrets: the library keeps them out of its errors.
func (h *handler) fail(w http.ResponseWriter, r *http.Request, op string, err error) {
	code := http.StatusInternalServerError
	switch {
	case errors.Is(err, webhook.ErrNotFound):
		code = http.StatusNotFound
	case errors.Is(err, webhook.ErrInvalidWebhook):
		code = http.StatusBadRequest
	case errors.Is(err, webhook.ErrNotFailed), errors.Is(err, webhook.ErrReemitPrepared):
		code = http.StatusConflict
	default:
		// The database's own words stay in the log.
		h.logger.LogAttrs(r.Context(), slog.LevelWarn, "webhookui: "+op+" failed", slog.String("error", err.Error()))
		http.Error(w, "the dashboard could not "+op+"; the server's log says why", code)
		return
	}
	http.Error(w, err.Error(), code)
}

// overviewData is the overview page's.
type overviewData struct {
	Stats    webhook.Stats
	Breakers []webhook.BreakerInfo
	Failed   []webhook.Delivery
}

func (h *handler) overview(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	st, err := h.in.Stats(ctx)
	if err != nil {
		h.fail(w, r, "stats", err)
		return
	}
	bl, err := h.in.Breakers(ctx, webhook.Page{Limit: 20})
	if err != nil {
		h.fail(w, r, "breakers", err)
		return
	}
	fl, err := h.in.Deliveries(ctx, webhook.DeliveryFilter{State: webhook.StateFailed}, webhook.Page{Limit: 10})
	if err != nil {
		h.fail(w, r, "deliveries", err)
		return
	}
	h.render(w, r, "overview", "overview", overviewData{Stats: st, Breakers: bl.Breakers, Failed: fl.Deliveries})
}

// filterForm is a delivery filter as the form and query string carry it.
type filterForm struct {
	State, URL, BreakerKey, Task, Type, Tenant, Since, Until string
}

func readFilter(v url.Values) filterForm {
	return filterForm{State: v.Get("state"), URL: v.Get("url"), BreakerKey: v.Get("breaker_key"), Task: v.Get("task"),
		Type: v.Get("type"), Tenant: v.Get("tenant"), Since: v.Get("since"), Until: v.Get("until")}
}

// Query is the form as a query string.
func (f filterForm) Query() template.URL {
	v := url.Values{}
	for k, s := range map[string]string{"state": f.State, "url": f.URL, "breaker_key": f.BreakerKey, "task": f.Task,
		"type": f.Type, "tenant": f.Tenant, "since": f.Since, "until": f.Until} {
		if s != "" {
			v.Set(k, s)
		}
	}
	return template.URL(v.Encode()) //nolint:gosec // url.Values.Encode escapes every value
}

// Narrow reports a form that selects by more than the state: what a bulk
// redelivery needs (every failed delivery at once is not offered here).
func (f filterForm) Narrow() bool { f.State = ""; return f != filterForm{} }

// times are the form's time inputs' layouts: RFC 3339, or an
// <input type=datetime-local> value, read as UTC.
var times = []string{time.RFC3339, "2006-01-02T15:04", "2006-01-02T15:04:05", "2006-01-02"}

// filter is the Inspector's filter for f.
func (f filterForm) filter() (webhook.DeliveryFilter, error) {
	out := webhook.DeliveryFilter{State: webhook.DeliveryState(f.State), URL: f.URL, BreakerKey: f.BreakerKey,
		TaskID: f.Task, NotificationType: f.Type, Tenant: f.Tenant}
	for _, t := range []struct {
		name, v string
		to      *time.Time
	}{{"since", f.Since, &out.AcceptedAfter}, {"until", f.Until, &out.AcceptedBefore}} {
		if t.v == "" {
			continue
		}
		ok := false
		for _, layout := range times {
			if v, err := time.Parse(layout, t.v); err == nil {
				*t.to, ok = v, true
				break
			}
		}
		if !ok {
			return out, &webhook.ValidationError{Field: t.name, Reason: "is not a time: use 2026-12-03T09:00:00Z"}
		}
	}
	return out, nil
}

// deliveriesData is the delivery list's.
type deliveriesData struct {
	Filter     filterForm
	States     []string
	Deliveries []webhook.Delivery
	Next       string
	After      string
}

func (h *handler) deliveries(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	form := readFilter(q)
	f, err := form.filter()
	if err != nil {
		h.fail(w, r, "deliveries", err)
		return
	}
	l, err := h.in.Deliveries(r.Context(), f, webhook.Page{After: q.Get("after"), Limit: 50})
	if err != nil {
		h.fail(w, r, "deliveries", err)
		return
	}
	h.render(w, r, "deliveries", "deliveries", deliveriesData{Filter: form, Deliveries: l.Deliveries, Next: l.Next, After: q.Get("after"),
		States: []string{"pending", "running", "delivered", "failed"}})
}

// deliveryData is the delivery page's.
type deliveryData struct {
	D        webhook.Delivery
	Attempts []webhook.Attempt
	Body     string
}

func (h *handler) delivery(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	d, err := h.in.Delivery(r.Context(), id)
	if err != nil {
		h.fail(w, r, "delivery", err)
		return
	}
	as, err := h.in.Attempts(r.Context(), id)
	if err != nil {
		h.fail(w, r, "attempts", err)
		return
	}
	h.render(w, r, "delivery", "deliveries", deliveryData{D: d, Attempts: as, Body: showbody.Pretty(d.Body)})
}

// breakersData is the breakers page's.
type breakersData struct {
	Breakers []webhook.BreakerInfo
	More     bool // more than opsutil.MaxBreakers
}

func (h *handler) breakers(w http.ResponseWriter, r *http.Request) {
	// Every one, on one page: a cursor would be a key, query and all.
	all, more, err := opsutil.AllBreakers(r.Context(), h.in)
	if err != nil {
		h.fail(w, r, "list breakers", err)
		return
	}
	h.render(w, r, "breakers", "breakers", breakersData{Breakers: all, More: more})
}

func (h *handler) redeliver(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	rc, err := h.in.Redeliver(r.Context(), id)
	if err != nil {
		h.fail(w, r, "redeliver", err)
		return
	}
	done := "redelivered"
	if rc.ReemissionOf == id {
		done = "reemitted"
	}
	http.Redirect(w, r, base(r)+"/deliveries/"+url.PathEscape(rc.ID)+"?done="+done, http.StatusSeeOther)
}

// confirmData is the bulk redelivery page's: a dry run's counts and the
// form that confirms it, or the result.
type confirmData struct {
	Filter filterForm
	Result webhook.BulkResult
	DryRun bool
}

// redeliverMatching answers the bulk form: without confirm=yes, a dry run
// and a page to confirm it; with it, the redelivery and its counts.
func (h *handler) redeliverMatching(w http.ResponseWriter, r *http.Request) {
	form := readFilter(r.PostForm)
	if !form.Narrow() {
		http.Error(w, "choose a filter besides the state: redelivering every failed delivery at once is not offered here", http.StatusBadRequest)
		return
	}
	f, err := form.filter()
	if err != nil {
		h.fail(w, r, "redeliver", err)
		return
	}
	dry := r.PostFormValue("confirm") != "yes"
	o := webhook.BulkOptions{DryRun: dry}
	if !dry {
		// No more than the operator confirmed, however many failed since
		// the dry run...
		n, err := strconv.Atoi(r.PostFormValue("limit"))
		if err != nil || n < 1 {
			http.Error(w, "the confirmation has no count: start again from the list", http.StatusBadRequest)
			return
		}
		// Nor deliveries newer than the newest it counted.
		o.Limit, o.Newest = n, r.PostFormValue("newest")
	}
	res, err := h.in.RedeliverMatching(r.Context(), f, o)
	if err != nil && res.Matched == 0 {
		h.fail(w, r, "redeliver", err)
		return
	}
	if err != nil {
		h.logger.LogAttrs(r.Context(), slog.LevelWarn, "webhookui: bulk redelivery stopped", slog.String("error", err.Error()),
			slog.Int("redelivered", res.Redelivered), slog.Int("reemitted", res.Reemitted))
	}
	h.render(w, r, "confirm", "deliveries", confirmData{Filter: form, Result: res, DryRun: dry})
}

func (h *handler) reset(w http.ResponseWriter, r *http.Request) {
	// The form names the breaker by its ref, never its key.
	ref := r.PostFormValue("ref")
	all, _, err := opsutil.AllBreakers(r.Context(), h.in)
	if err != nil {
		h.fail(w, r, "reset breaker", err)
		return
	}
	for _, b := range all {
		if b.Resettable() && hmac.Equal([]byte(h.ref(b.Key)), []byte(ref)) {
			if err := h.in.ResetBreaker(r.Context(), b.Key); err != nil {
				h.fail(w, r, "reset breaker", err)
				return
			}
			http.Redirect(w, r, base(r)+"/breakers?done=reset", http.StatusSeeOther)
			return
		}
	}
	http.Error(w, "no such breaker is open or counting failures (it may have been reset already): reload the page", http.StatusNotFound)
}
