package webhooktest_test

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/adcpkit/webhook/webhooktest"
)

// A receiver answers as a conformant AdCP 3.2 buyer: 503 for an identical
// delivery while the first is being handled, 200 once it was, 409 for a
// changed payload under the same idempotency key.
func ExampleReceiver_HoldNext() {
	rcv := webhooktest.NewReceiver(webhooktest.Config{})
	defer rcv.Close()
	post := func(body string) int {
		resp, err := http.Post(rcv.URL, "application/json", strings.NewReader(body))
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	const body = `{"idempotency_key":"whk_0123456789abcdef","status":"completed"}`

	hold := rcv.HoldNext()
	first := make(chan int)
	go func() { first <- post(body) }()
	<-hold.Held()
	fmt.Println("while held:", post(body))
	hold.Release()
	fmt.Println("first:", <-first)
	fmt.Println("again:", post(body))
	fmt.Println("changed:", post(`{"idempotency_key":"whk_0123456789abcdef","status":"failed"}`))
	// Output:
	// while held: 503
	// first: 200
	// again: 200
	// changed: 409
}
