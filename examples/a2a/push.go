package main

import (
	"context"
	"encoding/json"
	"slices"
	"strings"

	"github.com/a2aproject/a2a-go/a2a"
	"github.com/a2aproject/a2a-go/a2asrv"

	"github.com/adcpkit/webhook"
)

// PushSender is an a2asrv.PushSender that hands every push to a
// webhook.Supervisor: the task's JSON as a prepared body to the config's
// URL, so A2A pushes get the same retries, breaker, audit and durability as
// MCP webhooks. The config's token goes in the X-A2A-Notification-Token
// header of every attempt; a config whose authentication names Bearer with
// credentials is sent with them.
type PushSender struct{ sup webhook.Supervisor }

var _ a2asrv.PushSender = (*PushSender)(nil)

// NewPushSender returns a PushSender on sup.
func NewPushSender(sup webhook.Supervisor) *PushSender { return &PushSender{sup: sup} }

// SendPush accepts the push for delivery; it does not wait for the
// receiver.
func (p *PushSender) SendPush(ctx context.Context, config *a2a.PushConfig, task *a2a.Task) error {
	body, err := json.Marshal(task)
	if err != nil {
		return err
	}
	w := webhook.PreparedWebhook{
		URL:            config.URL,
		Body:           body,
		IdempotencyKey: webhook.NewIdempotencyKey(),
		TaskID:         string(task.ID),
		Routing:        webhook.Routing{NotificationType: "a2a.push"},
	}
	if config.Token != "" {
		w.Headers = map[string]string{"X-A2A-Notification-Token": config.Token}
	}
	if a := config.Auth; a != nil && a.Credentials != "" &&
		slices.ContainsFunc(a.Schemes, func(s string) bool { return strings.EqualFold(s, "Bearer") }) {
		w.Authentication = &webhook.Authentication{Scheme: webhook.AuthBearer, Credentials: a.Credentials}
	}
	_, err = p.sup.SendPrepared(ctx, w)
	return err
}
