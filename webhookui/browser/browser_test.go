// Package browser tests the webhookui dashboard in a real headless
// Chromium (Debian's chromium package), against a PostgresSupervisor
// whose workers deliver over real HTTP. It is its own module so that the
// library's go.mod does not gain a browser driver.
//
// Set WEBHOOKUI_SCREENSHOTS to a directory to save the main pages there
// (the README's screenshots in docs/ are made so), and
// WEBHOOK_REQUIRE_BROWSER=1 to fail, not skip, without Chromium.
package browser

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"github.com/adcpkit/webhook"
	"github.com/adcpkit/webhook/internal/pgtest"
	"github.com/adcpkit/webhook/webhookui"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(pgtest.Wrap(m))) }

const secretToken = "buyer-token-0123456789-secret"

// chromium finds the browser, or skips (fails under
// WEBHOOK_REQUIRE_BROWSER=1).
func chromium(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("WEBHOOK_REQUIRE_BROWSER") == "1" {
		t.Fatal("no chromium on PATH, and WEBHOOK_REQUIRE_BROWSER=1: install Debian's chromium package")
	}
	t.Skip("no chromium on PATH: install Debian's chromium package to run the dashboard's browser test")
	return ""
}

func TestDashboardInChromium(t *testing.T) {
	exe := chromium(t)
	ctx := context.Background()

	// The buyers: one healthy, one down until told otherwise.
	var healthy atomic.Bool
	ok := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer ok.Close()
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if !healthy.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
		}
	}))
	defer down.Close()
	downURL := down.URL + "/adcp/webhooks?sig=querysecret"

	// The seller's pods: one worker supervisor, and the dashboard's own
	// Sender-less supervisor on the same tables.
	pool := pgtest.New(t)
	key, err := webhook.GenerateSigningKey("ui-browser", "ed25519")
	require.NoError(t, err)
	signer, err := webhook.NewRFC9421Signer(webhook.SignerConfig{Key: key})
	require.NoError(t, err)
	sender, err := webhook.NewHTTPSender(webhook.HTTPSenderConfig{Signer: signer, AllowPrivateDestinations: true})
	require.NoError(t, err)
	worker, err := webhook.NewPostgresSupervisor(pool, sender, webhook.PostgresConfig{AllowInsecureHTTP: true,
		PollInterval: 20 * time.Millisecond, Retry: webhook.RetryPolicy{MaxAttempts: 1}, Breaker: webhook.BreakerPolicy{FailureThreshold: 4}})
	require.NoError(t, err)
	require.NoError(t, worker.CreateSchema(ctx))
	wctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- worker.RunWorker(wctx) }()
	defer func() { stop(); <-done }()

	ids := map[string]string{}
	send := func(task, url, ntype string) {
		r, err := worker.SendMCP(ctx, webhook.MCPWebhook{URL: url, OperationID: "op_" + task, TaskID: task,
			TaskType: webhook.TaskCreateMediaBuy, Status: webhook.StatusCompleted, Token: secretToken,
			Result:  map[string]any{"media_buy_id": task, "packages": []any{map[string]any{"package_id": "pkg_1", "status": "active"}}},
			Routing: webhook.Routing{NotificationType: ntype}})
		require.NoError(t, err)
		ids[task] = r.ID
		c, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		_, err = worker.Wait(c, r.ID)
		require.NoError(t, err)
	}
	for i := range 6 {
		send(fmt.Sprintf("mb_live_%d", i), ok.URL+"/adcp/webhooks", "")
	}
	for _, task := range []string{"mb_down_1", "mb_down_2", "mb_down_3", "mb_down_4"} {
		send(task, downURL, "scheduled")
	}

	ops, err := webhook.NewPostgresSupervisor(pool, nil, webhook.PostgresConfig{PollOnly: true})
	require.NoError(t, err)
	ui, err := webhookui.New(webhookui.Config{Inspector: ops, Title: "Seller webhooks"})
	require.NoError(t, err)
	mux := http.NewServeMux()
	mux.Handle("/ops/webhooks/", http.StripPrefix("/ops/webhooks", ui))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	home := srv.URL + "/ops/webhooks/"

	// A page on another origin that posts a form to the dashboard, as a
	// cross-site request forgery would.
	var forged atomic.Int32
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		forged.Add(1)
		fmt.Fprintf(w, `<!doctype html><form id="f" method="post" action="%s/ops/webhooks/deliveries/%s/redeliver"><input name="csrf" value="guess"></form><script>document.getElementById('f').submit()</script>`, srv.URL, ids["mb_down_4"])
	}))
	defer evil.Close()

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(exe), chromedp.NoSandbox,
		chromedp.WindowSize(1280, 900), chromedp.DisableGPU)
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(actx)
	defer cancelBrowser()
	bctx, cancelTimeout := context.WithTimeout(bctx, 2*time.Minute)
	defer cancelTimeout()

	shots := os.Getenv("WEBHOOKUI_SCREENSHOTS")
	shot := func(name string) chromedp.Action[chromedp.Void] {
		return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			if shots == "" {
				return nil
			}
			png, err := chromedp.FullScreenshot(100)(ctx, tg)
			if err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(shots, name+".png"), png, 0o644)
		})
	}
	noSecrets := func(where string) chromedp.Action[chromedp.Void] {
		return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			html, err := chromedp.OuterHTML(css("html"))(ctx, tg)
			if err != nil {
				return err
			}
			for _, s := range []string{secretToken, "querysecret"} {
				if strings.Contains(html, s) {
					return fmt.Errorf("%s shows a secret (%q)", where, s)
				}
			}
			return nil
		})
	}
	do := func(steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		require.NoError(t, chromedp.Do(bctx, steps...))
	}
	text := func(sel string) string {
		t.Helper()
		v, err := chromedp.Run(bctx, chromedp.Text(css(sel)))
		require.NoError(t, err, sel)
		return strings.TrimSpace(v)
	}

	// The overview: counts, the failing endpoint, recent failures.
	do(chromedp.Navigate(home), chromedp.WaitVisible(css("#stats")), noSecrets("the overview"), shot("webhookui-overview"))
	require.Equal(t, "4", text("#failed"))
	require.Equal(t, "6", text("#delivered"))
	require.Equal(t, "1", text("#open-breakers"))
	require.Contains(t, text("#failing"), down.URL+"/adcp/webhooks")

	// The list, filtered through its form.
	do(chromedp.Click(css(`nav a[href$="/deliveries"]`)), chromedp.WaitVisible(css("#filters")),
		chromedp.SetValue(css(`select[name="state"]`), "failed"),
		chromedp.SetValue(css(`input[name="type"]`), "scheduled"),
		chromedp.Submit(css(`#filters button`)),
		chromedp.WaitVisible(css("#bulk")), noSecrets("the delivery list"), shot("webhookui-deliveries"))
	rows, err := chromedp.Run(bctx, chromedp.Evaluate[int](`document.querySelectorAll("#deliveries tbody tr").length`))
	require.NoError(t, err)
	require.Equal(t, 4, rows)

	// A delivery: its attempts and its body, token redacted; then redeliver
	// it once the buyer is back.
	do(chromedp.Click(css(`#deliveries a[href$="/deliveries/`+ids["mb_down_1"]+`"]`)), chromedp.WaitVisible(css("#body")),
		noSecrets("the delivery page"), shot("webhookui-delivery"))
	require.Equal(t, "failed", text("#state"))
	body := text("#body")
	require.Contains(t, body, `"token": "<redacted>"`)
	require.Contains(t, body, `"media_buy_id": "mb_down_1"`)
	// The buyer is back: its breaker is listed, then reset.
	healthy.Store(true)
	do(chromedp.Navigate(home+"breakers"), chromedp.WaitVisible(css("#breakers")), noSecrets("the breakers page"),
		shot("webhookui-breakers"), chromedp.Click(css(`#breakers button`)), chromedp.WaitVisible(css(".notice")))
	require.Contains(t, text(".notice"), "Breaker reset")
	st, err := ops.Breaker(ctx, downURL)
	require.NoError(t, err)
	require.Equal(t, webhook.BreakerClosed, st)

	// Then the delivery, redelivered from its page.
	do(chromedp.Navigate(home+"deliveries/"+ids["mb_down_1"]), chromedp.WaitVisible(css("#redeliver")))
	do(chromedp.Click(css("#redeliver button")), chromedp.WaitVisible(css(".notice")))
	require.Contains(t, text(".notice"), "Queued again under its own idempotency key")
	require.Equal(t, webhook.StateDelivered, wait(t, worker, ids["mb_down_1"]).State)

	// A forged cross-origin form is refused, and changes nothing.
	do(chromedp.Navigate(evil.URL))
	refused, err := chromedp.Run(bctx, chromedp.Poll[bool](`document.body && document.body.innerText.includes("cross-origin")`))
	require.NoError(t, err)
	require.True(t, refused, "the dashboard answered the forged form with a refusal")
	require.EqualValues(t, 1, forged.Load())
	d, err := ops.Delivery(ctx, ids["mb_down_4"])
	require.NoError(t, err)
	require.Equal(t, webhook.StateFailed, d.State)

	// Every failed delivery of the endpoint: a dry run, then confirmed.
	do(chromedp.Navigate(home+"deliveries?state=failed&type=scheduled"), chromedp.WaitVisible(css("#bulk")),
		chromedp.Click(css("#bulk button")), chromedp.WaitVisible(css("#confirm")), noSecrets("the confirmation"),
		shot("webhookui-confirm"))
	require.Equal(t, "3", text("#matched"))
	do(chromedp.Click(css("#confirm button")), chromedp.WaitVisible(css("#receipts")))
	require.Equal(t, "3", text("#redelivered"))
	for _, task := range []string{"mb_down_2", "mb_down_3", "mb_down_4"} {
		require.Equal(t, webhook.StateDelivered, wait(t, worker, ids[task]).State, task)
	}
}

// css is a CSS selector.
func css(s string) chromedp.CSS { return chromedp.CSS(s) }

func wait(t *testing.T, s *webhook.PostgresSupervisor, id string) webhook.Delivery {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	d, err := s.Wait(ctx, id)
	require.NoError(t, err)
	return d
}
