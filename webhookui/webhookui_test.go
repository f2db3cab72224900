package webhookui_test

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/adcpkit/webhook"
	"github.com/adcpkit/webhook/webhookui"
)

const secretToken = "buyer-token-0123456789-secret"

// fixture is a MemorySupervisor that delivered to a healthy buyer and
// failed to deliver to one that was down, over real HTTP, and the
// dashboard mounted under /ops/webhooks/.
type fixture struct {
	t       *testing.T
	sup     *webhook.MemorySupervisor
	srv     *httptest.Server
	client  *http.Client
	healthy *atomic.Bool
	ids     map[string]string
	downURL string
	// echo allows the down URL's query on a page: the operator typed it
	// into a filter, which the page shows back.
	echo bool
}

func newFixture(t *testing.T, readOnly bool) *fixture {
	t.Helper()
	f := &fixture{t: t, ids: map[string]string{}, healthy: &atomic.Bool{}}
	ok := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	t.Cleanup(ok.Close)
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if !f.healthy.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
		}
	}))
	t.Cleanup(down.Close)
	f.downURL = down.URL + "/hook?sig=querysecret"
	key, err := webhook.GenerateSigningKey("ui-test", "ed25519")
	require.NoError(t, err)
	signer, err := webhook.NewRFC9421Signer(webhook.SignerConfig{Key: key})
	require.NoError(t, err)
	sender, err := webhook.NewHTTPSender(webhook.HTTPSenderConfig{Signer: signer, AllowPrivateDestinations: true})
	require.NoError(t, err)
	f.sup, err = webhook.NewMemorySupervisor(sender, webhook.MemoryConfig{AllowInsecureHTTP: true,
		Retry: webhook.RetryPolicy{MaxAttempts: 1}, Breaker: webhook.BreakerPolicy{FailureThreshold: 2}})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go func() { _ = f.sup.RunWorker(ctx) }()
	for _, d := range []struct{ task, url string }{
		{"ok1", ok.URL + "/hook"}, {"down1", f.downURL}, {"down2", f.downURL}, {"<script>alert(1)</script>", ok.URL + "/hook"},
	} {
		r, err := f.sup.SendMCP(ctx, webhook.MCPWebhook{URL: d.url, OperationID: "op_1", TaskID: d.task,
			TaskType: webhook.TaskCreateMediaBuy, Status: webhook.StatusCompleted, Token: secretToken,
			Result: map[string]any{"media_buy_id": "mb_" + d.task}})
		require.NoError(t, err)
		f.ids[d.task] = r.ID
		wctx, wcancel := context.WithTimeout(ctx, 20*time.Second)
		_, err = f.sup.Wait(wctx, r.ID)
		wcancel()
		require.NoError(t, err)
	}
	ui, err := webhookui.New(webhookui.Config{Inspector: f.sup, ReadOnly: readOnly})
	require.NoError(t, err)
	mux := http.NewServeMux()
	mux.Handle("/ops/webhooks/", http.StripPrefix("/ops/webhooks", ui))
	f.srv = httptest.NewServer(mux)
	t.Cleanup(f.srv.Close)
	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	f.client = &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	return f
}

// get fetches a page and checks that no secret is on it.
func (f *fixture) get(path string) (int, string) {
	f.t.Helper()
	resp, err := f.client.Get(f.srv.URL + "/ops/webhooks" + path)
	require.NoError(f.t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(f.t, err)
	f.noSecrets(string(b))
	return resp.StatusCode, string(b)
}

func (f *fixture) noSecrets(page string) {
	f.t.Helper()
	for _, s := range []string{secretToken, "querysecret", "<script>alert"} {
		if s == "querysecret" && f.echo {
			// Only where the filter is shown back: form fields and links.
			page = regexp.MustCompile(`value="[^"]*querysecret"|href="[^"]*querysecret"`).ReplaceAllString(page, "")
		}
		require.NotContains(f.t, page, s)
	}
}

var (
	csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)
	refRE  = regexp.MustCompile(`name="ref" value="([^"]+)"`)
)

// post submits a form as a same-origin browser would (Sec-Fetch-Site
// same-origin), with the page's token unless form has one.
func (f *fixture) post(path string, form url.Values, headers map[string]string) (*http.Response, string) {
	f.t.Helper()
	req, err := http.NewRequest(http.MethodPost, f.srv.URL+"/ops/webhooks"+path, strings.NewReader(form.Encode()))
	require.NoError(f.t, err)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := f.client.Do(req)
	require.NoError(f.t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(f.t, err)
	f.noSecrets(string(b))
	return resp, string(b)
}

func (f *fixture) token() string {
	f.t.Helper()
	_, page := f.get("/deliveries?state=failed&task=down1")
	m := csrfRE.FindStringSubmatch(page)
	require.NotNil(f.t, m, "the page has a form token")
	return m[1]
}

func TestPagesShowTheQueueWithoutSecrets(t *testing.T) {
	t.Parallel()
	f := newFixture(t, false)
	code, page := f.get("/")
	require.Equal(t, http.StatusOK, code)
	require.Regexp(t, `id="delivered">2<`, page)
	require.Regexp(t, `id="failed">2<`, page)
	require.Regexp(t, `id="open-breakers">1<`, page)
	require.Contains(t, page, ">"+webhook.LoggableURL(f.downURL)+"<", "the failing endpoint, without its query")
	require.Contains(t, page, `href="/ops/webhooks/deliveries/`+f.ids["down2"]+`"`, "links carry the mount path")

	code, page = f.get("/deliveries?state=failed")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, page, ">"+f.ids["down1"]+"<")
	require.NotContains(t, page, ">"+f.ids["ok1"]+"<")
	_, page = f.get("/deliveries")
	require.Contains(t, page, "&lt;script&gt;alert(1)&lt;/script&gt;", "text is escaped")
	code, _ = f.get("/deliveries?state=lost")
	require.Equal(t, http.StatusBadRequest, code)
	code, _ = f.get("/deliveries?since=yesterday")
	require.Equal(t, http.StatusBadRequest, code)

	code, page = f.get("/deliveries/" + f.ids["down1"])
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, page, "&#34;token&#34;: &#34;&lt;redacted&gt;&#34;")
	require.Contains(t, page, "&#34;media_buy_id&#34;: &#34;mb_down1&#34;")
	require.Contains(t, page, "HTTP 503 Service Unavailable")
	require.Contains(t, page, `action="/ops/webhooks/deliveries/`+f.ids["down1"]+`/redeliver"`)
	code, _ = f.get("/deliveries/nope")
	require.Equal(t, http.StatusNotFound, code)

	code, page = f.get("/breakers")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, page, "open")
	code, _ = f.get("/static/style.css")
	require.Equal(t, http.StatusOK, code)
}

func TestActionsRedeliverAndReset(t *testing.T) {
	t.Parallel()
	f := newFixture(t, false)
	tok := f.token()
	f.healthy.Store(true)

	_, page := f.get("/breakers")
	ref := refRE.FindStringSubmatch(page)
	require.NotNil(t, ref)
	resp, _ := f.post("/breakers/reset", url.Values{"csrf": {tok}, "ref": {ref[1]}}, nil)
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	require.Equal(t, "/ops/webhooks/breakers?done=reset", resp.Header.Get("Location"))
	st, err := f.sup.Breaker(context.Background(), f.downURL)
	require.NoError(t, err)
	require.Equal(t, webhook.BreakerClosed, st, "the ref named the real key")
	resp, _ = f.post("/breakers/reset", url.Values{"csrf": {tok}, "ref": {ref[1]}}, nil)
	require.Equal(t, http.StatusNotFound, resp.StatusCode, "reset already")
	_, page = f.get("/breakers")
	require.Contains(t, page, "Failing since")
	require.Contains(t, page, webhook.LoggableURL(f.downURL), "listed until its next 2xx")
	require.Nil(t, refRE.FindStringSubmatch(page), "closed: nothing to reset, no button")

	resp, _ = f.post("/deliveries/"+f.ids["down1"]+"/redeliver", url.Values{"csrf": {tok}}, nil)
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	require.Equal(t, "/ops/webhooks/deliveries/"+f.ids["down1"]+"?done=redelivered", resp.Header.Get("Location"))
	d, err := f.sup.Wait(context.Background(), f.ids["down1"])
	require.NoError(t, err)
	require.Equal(t, webhook.StateDelivered, d.State)
	resp, _ = f.post("/deliveries/"+f.ids["down1"]+"/redeliver", url.Values{"csrf": {tok}}, nil)
	require.Equal(t, http.StatusConflict, resp.StatusCode, "delivered: nothing to redeliver")

	// Bulk: a dry run first, changing nothing; then the confirmed run.
	f.echo = true
	filter := url.Values{"csrf": {tok}, "state": {"failed"}, "url": {f.downURL}}
	resp, page = f.post("/redeliver", filter, nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, page, `id="matched">1<`)
	require.Contains(t, page, `id="confirm"`)
	d, err = f.sup.Delivery(context.Background(), f.ids["down2"])
	require.NoError(t, err)
	require.Equal(t, webhook.StateFailed, d.State, "a dry run changes nothing")
	filter.Set("confirm", "yes")
	resp, _ = f.post("/redeliver", filter, nil)
	require.Equal(t, http.StatusBadRequest, resp.StatusCode, "a confirmation carries the count confirmed")
	filter.Set("limit", regexp.MustCompile(`name="limit" value="(\d+)"`).FindStringSubmatch(page)[1])
	resp, page = f.post("/redeliver", filter, nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, page, `id="redelivered">1<`)
	d, err = f.sup.Wait(context.Background(), f.ids["down2"])
	require.NoError(t, err)
	require.Equal(t, webhook.StateDelivered, d.State)

	resp, _ = f.post("/redeliver", url.Values{"csrf": {tok}}, nil)
	require.Equal(t, http.StatusBadRequest, resp.StatusCode, "a filter is required")
	resp, _ = f.post("/redeliver", url.Values{"csrf": {tok}, "state": {"failed"}, "confirm": {"yes"}, "limit": {"10"}}, nil)
	require.Equal(t, http.StatusBadRequest, resp.StatusCode, "the state alone narrows nothing")
}

func TestActionsAreProtected(t *testing.T) {
	t.Parallel()
	f := newFixture(t, false)
	tok := f.token()
	id := f.ids["down1"]
	for name, tc := range map[string]struct {
		form    url.Values
		headers map[string]string
	}{
		"no token":        {url.Values{}, nil},
		"wrong token":     {url.Values{"csrf": {"forged"}}, nil},
		"cross-site":      {url.Values{"csrf": {tok}}, map[string]string{"Sec-Fetch-Site": "cross-site"}},
		"same-site":       {url.Values{"csrf": {tok}}, map[string]string{"Sec-Fetch-Site": "same-site"}},
		"foreign origin":  {url.Values{"csrf": {tok}}, map[string]string{"Sec-Fetch-Site": "", "Origin": "https://evil.example"}},
		"another browser": {url.Values{"csrf": {tok}}, map[string]string{"Cookie": "webhookui_csrf=" + strings.Repeat("A", 43)}},
	} {
		if name == "another browser" {
			f.client.Jar, _ = cookiejar.New(nil) // its own cookie, the first browser's token
		}
		resp, _ := f.post("/deliveries/"+id+"/redeliver", tc.form, tc.headers)
		require.Equal(t, http.StatusForbidden, resp.StatusCode, name)
	}
	d, err := f.sup.Delivery(context.Background(), id)
	require.NoError(t, err)
	require.Equal(t, webhook.StateFailed, d.State, "nothing was redelivered")
}

func TestReadOnlyHidesAndRefusesActions(t *testing.T) {
	t.Parallel()
	f := newFixture(t, true)
	_, page := f.get("/deliveries/" + f.ids["down1"])
	require.NotContains(t, page, "/redeliver")
	require.Contains(t, page, "read-only")
	_, page = f.get("/breakers")
	require.NotContains(t, page, "/breakers/reset")
	_, page = f.get("/deliveries?state=failed")
	require.NotContains(t, page, `id="bulk"`)
	m := csrfRE.FindStringSubmatch(page)
	require.Nil(t, m, "no forms at all")
	resp, _ := f.post("/deliveries/"+f.ids["down1"]+"/redeliver", url.Values{}, nil)
	require.Equal(t, http.StatusForbidden, resp.StatusCode)
}

func TestNewRejectsBadConfig(t *testing.T) {
	t.Parallel()
	_, err := webhookui.New(webhookui.Config{})
	require.ErrorContains(t, err, "Config.Inspector")
	sup, err := webhook.NewMemorySupervisor(nil, webhook.MemoryConfig{})
	require.NoError(t, err)
	_, err = webhookui.New(webhookui.Config{Inspector: sup, CSRFKey: []byte("short")})
	require.ErrorContains(t, err, "Config.CSRFKey")
}

// fakeInspector lists the breakers it is given, records resets, and has
// a bulk redelivery whose matching set can grow between the dry run and
// the confirmation.
type fakeInspector struct {
	webhook.Inspector
	breakers []webhook.BreakerInfo
	reset    []string
	failed   int
	newest   []string // the Newest of each confirmed run
}

func (f *fakeInspector) Breakers(context.Context, webhook.Page) (webhook.BreakerList, error) {
	return webhook.BreakerList{Breakers: f.breakers}, nil
}

func (f *fakeInspector) Deliveries(context.Context, webhook.DeliveryFilter, webhook.Page) (webhook.DeliveryList, error) {
	return webhook.DeliveryList{}, nil
}

func (f *fakeInspector) ResetBreaker(_ context.Context, key string) error {
	f.reset = append(f.reset, key)
	return nil
}

func (f *fakeInspector) RedeliverMatching(_ context.Context, _ webhook.DeliveryFilter, o webhook.BulkOptions) (webhook.BulkResult, error) {
	n := f.failed
	if o.Limit > 0 {
		n = min(n, o.Limit)
	}
	if !o.DryRun {
		f.failed -= n
	}
	if o.Newest != "" {
		f.newest = append(f.newest, o.Newest)
	}
	return webhook.BulkResult{Matched: n, Redelivered: n, Newest: "d1"}, nil
}

// mountFake serves ui for in under /ops/webhooks/ and returns a browser
// (a client with a cookie jar) that has loaded path.
func mountFake(t *testing.T, in webhook.Inspector, path string) (*fixture, string) {
	t.Helper()
	ui, err := webhookui.New(webhookui.Config{Inspector: in})
	require.NoError(t, err)
	mux := http.NewServeMux()
	mux.Handle("/ops/webhooks/", http.StripPrefix("/ops/webhooks", ui))
	f := &fixture{t: t, srv: httptest.NewServer(mux), ids: map[string]string{}}
	t.Cleanup(f.srv.Close)
	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	f.client = &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	_, page := f.get(path)
	return f, page
}

// Two breakers whose keys differ only in a query print alike; each row's
// reset resets its own, and no page shows the query.
func TestResetNamesTheRowsOwnBreaker(t *testing.T) {
	t.Parallel()
	in := &fakeInspector{breakers: []webhook.BreakerInfo{
		{Key: "https://b.example/hook", State: webhook.BreakerOpen},
		{Key: "https://b.example/hook?sig=querysecret", State: webhook.BreakerOpen}}}
	f, page := mountFake(t, in, "/breakers")
	refs := refRE.FindAllStringSubmatch(page, -1)
	require.Len(t, refs, 2)
	tok := csrfRE.FindStringSubmatch(page)[1]
	resp, _ := f.post("/breakers/reset", url.Values{"csrf": {tok}, "ref": {refs[1][1]}}, nil)
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	require.Equal(t, []string{"https://b.example/hook?sig=querysecret"}, in.reset)
	resp, _ = f.post("/breakers/reset", url.Values{"csrf": {tok}, "ref": {"forged"}}, nil)
	require.Equal(t, http.StatusNotFound, resp.StatusCode)
}

// A confirmed bulk redelivery sends no more than the dry run counted, even
// when more failed in between.
func TestBulkConfirmationBindsTheCount(t *testing.T) {
	t.Parallel()
	in := &fakeInspector{failed: 1}
	f, page := mountFake(t, in, "/deliveries?task=x")
	tok := csrfRE.FindStringSubmatch(page)[1]
	form := url.Values{"csrf": {tok}, "since": {"2000-01-01"}}
	_, page = f.post("/redeliver", form, nil)
	require.Contains(t, page, `id="matched">1<`)
	in.failed = 5000
	form.Set("confirm", "yes")
	form.Set("limit", regexp.MustCompile(`name="limit" value="(\d+)"`).FindStringSubmatch(page)[1])
	form.Set("newest", regexp.MustCompile(`name="newest" value="([^"]+)"`).FindStringSubmatch(page)[1])
	_, page = f.post("/redeliver", form, nil)
	require.Contains(t, page, `id="redelivered">1<`, "the operator confirmed 1")
	require.Equal(t, 4999, in.failed)
	require.Equal(t, []string{"d1"}, in.newest, "bound to the dry run's newest delivery")
}

// Links, forms and the cookie keep the mount path for a request in
// absolute form (RFC 9112 3.2.2) and for an escaped path.
func TestMountPathSurvivesOddRequestTargets(t *testing.T) {
	t.Parallel()
	in := &fakeInspector{breakers: []webhook.BreakerInfo{{Key: "https://b.example/hook", State: webhook.BreakerOpen}}}
	f, _ := mountFake(t, in, "/breakers")
	addr := f.srv.Listener.Addr().String()
	for _, target := range []string{"http://" + addr + "/ops/webhooks/breakers", "/ops/webhooks/%62reakers"} {
		c, err := net.Dial("tcp", addr)
		require.NoError(t, err)
		_, err = io.WriteString(c, "GET "+target+" HTTP/1.1\r\nHost: "+addr+"\r\nConnection: close\r\n\r\n")
		require.NoError(t, err)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		require.NoError(t, err)
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		c.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode, target)
		require.Contains(t, string(b), `href="/ops/webhooks/deliveries"`, target)
		require.Contains(t, string(b), `action="/ops/webhooks/breakers/reset"`, target)
		require.Contains(t, resp.Header.Get("Set-Cookie"), "Path=/ops/webhooks/", target)
	}
}

// sealedInspector has one delivery whose body this process cannot decrypt,
// and records the filter it lists by.
type sealedInspector struct {
	fakeInspector
	filter webhook.DeliveryFilter
}

func (s *sealedInspector) Delivery(_ context.Context, id string) (webhook.Delivery, error) {
	return webhook.Delivery{ID: id, URL: "https://b.example/hook", BreakerKey: "https://b.example/hook", State: webhook.StatePending,
		Tenant: "acme", EncryptionKey: "k1"}, nil
}

func (s *sealedInspector) Attempts(context.Context, string) ([]webhook.Attempt, error) {
	return nil, nil
}

func (s *sealedInspector) Deliveries(_ context.Context, f webhook.DeliveryFilter, _ webhook.Page) (webhook.DeliveryList, error) {
	s.filter = f
	return webhook.DeliveryList{}, nil
}

// A body encrypted at rest that the dashboard's supervisor cannot decrypt
// is said to be, with its key; the tenant is shown and filters the list.
func TestDeliveryPageSealedBodyAndTenant(t *testing.T) {
	t.Parallel()
	in := &sealedInspector{}
	_, page := mountFake(t, in, "/deliveries/7")
	require.Contains(t, page, `id="body-sealed"`)
	require.Contains(t, page, "<code>k1</code>")
	require.Contains(t, page, "<dd>acme</dd>")
	require.NotContains(t, page, `<pre id="body">`)
	_, page = mountFake(t, in, "/deliveries?tenant=acme")
	require.Equal(t, "acme", in.filter.Tenant)
	require.Contains(t, page, `name="tenant" value="acme"`)
}
