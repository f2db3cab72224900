package webhook

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/adcpkit/webhook/receive"
)

// captured is what a loopback receiver saw.
type captured struct {
	method string
	uri    string
	header http.Header
	body   []byte
}

func receiver(t *testing.T, h func(w http.ResponseWriter, r *http.Request)) (*httptest.Server, chan captured) {
	t.Helper()
	ch := make(chan captured, 10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		ch <- captured{method: r.Method, uri: r.RequestURI, header: r.Header.Clone(), body: body}
		if h != nil {
			h(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv, ch
}

// newTestSender returns a sender allowed to reach the loopback receivers.
func newTestSender(t *testing.T, cfg HTTPSenderConfig) *HTTPSender {
	t.Helper()
	cfg.AllowPrivateDestinations = true
	s, err := NewHTTPSender(cfg)
	require.NoError(t, err)
	t.Cleanup(s.client.CloseIdleConnections)
	return s
}

func TestHTTPSenderPostsExactBytes(t *testing.T) {
	t.Parallel()
	srv, got := receiver(t, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("X-Receiver", "yes")
		w.WriteHeader(http.StatusAccepted)
		_, _ = io.WriteString(w, "queued")
	})
	s := newTestSender(t, HTTPSenderConfig{})
	body := []byte(`{"b":"<&>", "a":1}`)
	resp, err := s.Send(context.Background(), &Request{URL: srv.URL + "/hook?x=1", Body: body, IdempotencyKey: NewIdempotencyKey()})
	require.NoError(t, err)
	require.Equal(t, http.StatusAccepted, resp.StatusCode)
	require.Equal(t, "queued", string(resp.Body))
	require.Equal(t, "yes", resp.Header.Get("X-Receiver"))
	c := <-got
	require.Equal(t, http.MethodPost, c.method)
	require.Equal(t, body, c.body)
	require.Equal(t, "application/json", c.header.Get("Content-Type"))
	require.Equal(t, "identity", c.header.Get("Accept-Encoding"))
	require.Contains(t, c.header.Get("User-Agent"), "adcpkit-webhook")
	require.Empty(t, c.header.Get("Authorization"))
	require.Empty(t, c.header.Get("X-ADCP-Signature"))
}

func TestHTTPSenderStatusIsAResponseNotAnError(t *testing.T) {
	t.Parallel()
	srv, _ := receiver(t, func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) })
	resp, err := newTestSender(t, HTTPSenderConfig{}).Send(context.Background(), &Request{URL: srv.URL, Body: []byte(`{}`)})
	require.NoError(t, err)
	require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
}

func TestHTTPSenderNeverFollowsRedirects(t *testing.T) {
	t.Parallel()
	var hitTarget atomic.Bool
	target := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { hitTarget.Store(true) }))
	t.Cleanup(target.Close)
	srv, _ := receiver(t, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target.URL, http.StatusTemporaryRedirect)
	})
	resp, err := newTestSender(t, HTTPSenderConfig{}).Send(context.Background(), &Request{URL: srv.URL, Body: []byte(`{}`)})
	require.NoError(t, err)
	require.Equal(t, http.StatusTemporaryRedirect, resp.StatusCode)
	require.False(t, hitTarget.Load())
	require.Equal(t, VerdictFail, DefaultClassifier(resp, nil, time.Now()).Verdict)
}

func TestHTTPSenderIgnoresProxyEnvironment(t *testing.T) {
	t.Parallel()
	s := newTestSender(t, HTTPSenderConfig{})
	tr, ok := s.client.Transport.(*http.Transport)
	require.True(t, ok)
	require.Nil(t, tr.Proxy, "proxy settings from HTTP_PROXY and friends must not apply")
	require.True(t, tr.DisableCompression)
}

func TestHTTPSenderCapsResponseBody(t *testing.T) {
	t.Parallel()
	srv, _ := receiver(t, func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusBadRequest)
		_, _ = io.WriteString(w, strings.Repeat("x", 1<<20))
	})
	resp, err := newTestSender(t, HTTPSenderConfig{}).Send(context.Background(), &Request{URL: srv.URL, Body: []byte(`{}`)})
	require.NoError(t, err)
	require.Len(t, resp.Body, MaxResponseBytesDefault)
	require.Equal(t, "HTTP 400 Bad Request", describeResponse(resp), "attempt records keep none of it")
}

func TestHTTPSenderRefusesHugeBodies(t *testing.T) {
	t.Parallel()
	srv, got := receiver(t, nil)
	_, err := newTestSender(t, HTTPSenderConfig{}).Send(context.Background(), &Request{URL: srv.URL, Body: make([]byte, MaxBodyBytes+1)})
	require.ErrorIs(t, err, ErrBodyTooLarge)
	require.Empty(t, got)
}

func TestHTTPSenderTimesOut(t *testing.T) {
	t.Parallel()
	unblock := make(chan struct{})
	srv, _ := receiver(t, func(_ http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-unblock:
		}
	})
	t.Cleanup(func() { close(unblock) })
	resp, err := newTestSender(t, HTTPSenderConfig{Timeout: 50 * time.Millisecond}).Send(context.Background(), &Request{URL: srv.URL, Body: []byte(`{}`)})
	require.Nil(t, resp)
	require.Error(t, err)
	var ne net.Error
	require.True(t, errors.As(err, &ne) && ne.Timeout(), "%v", err)
	c := DefaultClassifier(nil, err, time.Now())
	require.Equal(t, VerdictRetry, c.Verdict)
	require.True(t, c.BreakerFailure)
}

func TestHTTPSenderErrorsHideTheURL(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close()) // nothing listens there now
	_, err = newTestSender(t, HTTPSenderConfig{}).Send(context.Background(), &Request{URL: "http://" + addr + "/hook?token=s3cr3t-query-token", Body: []byte(`{}`)})
	require.Error(t, err)
	require.NotContains(t, err.Error(), "s3cr3t-query-token")
}

func TestHTTPSenderLegacyAuthentication(t *testing.T) {
	t.Parallel()
	srv, got := receiver(t, nil)
	secret := "0123456789abcdef0123456789abcdef"
	s := newTestSender(t, HTTPSenderConfig{Now: func() time.Time { return time.Unix(1776520800, 0) }})
	body := []byte(`{"task_id":"t1"}`)

	_, err := s.Send(context.Background(), &Request{URL: srv.URL, Body: body, Authentication: &Authentication{Scheme: AuthBearer, Credentials: secret}})
	require.NoError(t, err)
	c := <-got
	require.Equal(t, "Bearer "+secret, c.header.Get("Authorization"))
	require.Empty(t, c.header.Get("X-ADCP-Signature"))

	_, err = s.Send(context.Background(), &Request{URL: srv.URL, Body: body, Authentication: &Authentication{Scheme: AuthHMACSHA256, Credentials: secret}})
	require.NoError(t, err)
	c = <-got
	require.Empty(t, c.header.Get("Authorization"))
	require.Equal(t, "1776520800", c.header.Get("X-ADCP-Timestamp"))
	require.Equal(t, "sha256="+receive.LegacyHMAC(secret, "1776520800", body), c.header.Get("X-ADCP-Signature"))
	// The fixed value was computed independently with Python's hmac module.
	require.Equal(t, "sha256=915163e392f17f0a48a3cd09250cb641c9318ca13f612de9871e108d5afc9522", c.header.Get("X-ADCP-Signature"))
}

func TestNewHTTPSenderRejectsBadConfig(t *testing.T) {
	t.Parallel()
	_, err := NewHTTPSender(HTTPSenderConfig{Timeout: -1})
	require.ErrorIs(t, err, ErrInvalidConfig)
	_, err = NewHTTPSender(HTTPSenderConfig{MaxResponseBytes: -1})
	require.ErrorIs(t, err, ErrInvalidConfig)
	var ce *ConfigError
	_, err = NewHTTPSender(HTTPSenderConfig{Resolver: (*net.Resolver)(nil)})
	require.ErrorAs(t, err, &ce)
	require.Equal(t, "HTTPSenderConfig.Resolver", ce.Field)
}

// panickingResolver panics on every lookup.
type panickingResolver struct{}

func (panickingResolver) LookupNetIP(context.Context, string, string) ([]netip.Addr, error) {
	panic("resolver bug")
}

// TestHTTPSenderContainsAResolverPanic: the resolver runs on net/http's
// dialling goroutine, where a panic would end the process.
func TestHTTPSenderContainsAResolverPanic(t *testing.T) {
	t.Parallel()
	s, err := NewHTTPSender(HTTPSenderConfig{Resolver: panickingResolver{}})
	require.NoError(t, err)
	_, err = s.Send(context.Background(), &Request{URL: "https://buyer.example/hook", Body: []byte(`{}`)})
	require.ErrorContains(t, err, "Resolver panicked")
	require.NotContains(t, err.Error(), "resolver bug", "the panic's value stays out")
}

// fakeResolver answers every lookup with the same addresses.
type fakeResolver struct {
	addrs []netip.Addr
	err   error
}

func (r fakeResolver) LookupNetIP(context.Context, string, string) ([]netip.Addr, error) {
	return r.addrs, r.err
}

func TestHTTPSenderBlocksInternalDestinations(t *testing.T) {
	t.Parallel()
	// One address per blocked range. Nothing is dialled: the check comes
	// first, so no packet leaves the machine.
	private := []string{"127.0.0.1", "::1", "10.0.0.1", "172.16.0.1", "192.168.0.1", "100.64.0.1",
		"169.254.10.10", "fe80::1", "fd12::1", "::ffff:10.0.0.1"}
	forbidden := []string{"169.254.169.254", "fd00:ec2::254", "100.100.100.200", "192.0.0.192",
		"0.0.0.0", "::", "224.0.0.1", "ff02::1", "255.255.255.255", "240.0.0.1", "192.0.2.1", "::ffff:169.254.169.254"}
	cases := map[bool][]string{
		false: append(append([]string{}, private...), forbidden...),
		true:  forbidden, // metadata and the rest stay blocked even so
	}
	for allowPrivate, ips := range cases {
		for _, ip := range ips {
			addr := netip.MustParseAddr(ip)
			s, err := NewHTTPSender(HTTPSenderConfig{AllowPrivateDestinations: allowPrivate, Resolver: fakeResolver{addrs: []netip.Addr{addr}}})
			require.NoError(t, err)
			for _, url := range []string{"http://rebind.example/hook", "http://" + net.JoinHostPort(ip, "80") + "/hook"} {
				_, err = s.Send(context.Background(), &Request{URL: url, Body: []byte(`{}`)})
				require.ErrorIs(t, err, ErrBlockedDestination, "%s (%s), AllowPrivateDestinations=%v", url, ip, allowPrivate)
				c := DefaultClassifier(nil, err, time.Now())
				require.Equal(t, VerdictFail, c.Verdict, "a blocked destination is permanent")
				require.False(t, c.BreakerFailure)
			}
		}
	}
}

func TestHTTPSenderBlocksIfAnyAddressIsInternal(t *testing.T) {
	t.Parallel()
	s, err := NewHTTPSender(HTTPSenderConfig{Resolver: fakeResolver{addrs: []netip.Addr{
		netip.MustParseAddr("93.184.216.34"), netip.MustParseAddr("127.0.0.1")}}})
	require.NoError(t, err)
	_, err = s.Send(context.Background(), &Request{URL: "http://mixed.example/hook", Body: []byte(`{}`)})
	require.ErrorIs(t, err, ErrBlockedDestination)
}

func TestHTTPSenderDNSFailureIsTransient(t *testing.T) {
	t.Parallel()
	s, err := NewHTTPSender(HTTPSenderConfig{Resolver: fakeResolver{err: &net.DNSError{Err: "server misbehaving", Name: "buyer.example", IsTemporary: true}}})
	require.NoError(t, err)
	_, err = s.Send(context.Background(), &Request{URL: "https://buyer.example/hook", Body: []byte(`{}`)})
	require.Error(t, err)
	require.NotErrorIs(t, err, ErrBlockedDestination)
	require.Equal(t, VerdictRetry, DefaultClassifier(nil, err, time.Now()).Verdict)
}

func TestHTTPSenderDialsTheAddressItChecked(t *testing.T) {
	t.Parallel()
	srv, got := receiver(t, nil)
	_, port, err := net.SplitHostPort(strings.TrimPrefix(srv.URL, "http://"))
	require.NoError(t, err)
	// The name resolves (once) to the loopback receiver; the request goes
	// there, with the name as Host.
	s := newTestSender(t, HTTPSenderConfig{Resolver: fakeResolver{addrs: []netip.Addr{netip.MustParseAddr("127.0.0.1")}}})
	resp, err := s.Send(context.Background(), &Request{URL: "http://buyer.example:" + port + "/hook", Body: []byte(`{}`)})
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	<-got
}

func TestHTTPSenderSigningFailureIsNotTheEndpointsFault(t *testing.T) {
	t.Parallel()
	srv, got := receiver(t, nil)
	s := newTestSender(t, HTTPSenderConfig{Signer: SignerFunc(func(*http.Request, []byte) error {
		return errors.New("key service unavailable")
	})})
	_, err := s.Send(context.Background(), &Request{URL: srv.URL, Body: []byte(`{}`)})
	require.ErrorIs(t, err, ErrSigning)
	require.Empty(t, got, "nothing was sent")
	c := DefaultClassifier(nil, err, time.Now())
	require.Equal(t, VerdictRetry, c.Verdict)
	require.False(t, c.BreakerFailure, "the buyer's endpoint is not to blame")
}

func TestHTTPSenderSendsDeliveryHeadersButNeverReservedOnes(t *testing.T) {
	t.Parallel()
	srv, got := receiver(t, nil)
	s := newTestSender(t, HTTPSenderConfig{})
	_, err := s.Send(context.Background(), &Request{URL: srv.URL, Body: []byte(`{}`), IdempotencyKey: NewIdempotencyKey(),
		Headers: map[string]string{
			"X-A2A-Notification-Token": "tok-123",
			"content-type":             "text/plain", // a custom caller's mistake: the sender's own wins
			"Authorization":            "Basic c2VjcmV0",
		}})
	require.NoError(t, err)
	c := <-got
	require.Equal(t, "tok-123", c.header.Get("X-A2A-Notification-Token"))
	require.Equal(t, "application/json", c.header.Get("Content-Type"))
	require.Empty(t, c.header.Get("Authorization"))
}

// TestHTTPSenderCapsResponseHeaders: a receiver cannot make an attempt
// cost more than the header caps, and the attempt fails with a clear
// error. Before the caps, net/http read up to 10 MB of headers.
func TestHTTPSenderCapsResponseHeaders(t *testing.T) {
	t.Parallel()
	answer := func(fields, size int) *httptest.Server {
		srv, _ := receiver(t, func(w http.ResponseWriter, _ *http.Request) {
			for i := range fields {
				w.Header().Add(fmt.Sprintf("X-F%d", i), strings.Repeat("v", size))
			}
			w.WriteHeader(http.StatusOK)
		})
		return srv
	}
	s := newTestSender(t, HTTPSenderConfig{})
	send := func(srv *httptest.Server) (*Response, error) {
		return s.Send(context.Background(), &Request{URL: srv.URL, Body: []byte(`{}`)})
	}
	resp, err := send(answer(MaxResponseHeaderFields-10, 100))
	require.NoError(t, err, "within both caps")
	require.Equal(t, http.StatusOK, resp.StatusCode)

	for name, srv := range map[string]*httptest.Server{
		"too many fields": answer(MaxResponseHeaderFields+1, 1),
		"too many bytes":  answer(40, MaxResponseHeaderBytes/20),
	} {
		_, err := send(srv)
		require.ErrorIs(t, err, ErrResponseHeadersTooLarge, name)
		class := DefaultClassifier(nil, err, time.Now())
		require.Equal(t, VerdictRetry, class.Verdict, name)
		require.True(t, class.BreakerFailure, name)
	}
}
