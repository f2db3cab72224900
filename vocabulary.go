package webhook

// This file holds the AdCP vocabulary the payloads use: task statuses,
// task types and protocols, as the spec's enums define them.

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

// The delivery-report notification types (notification-type.json):
// point-in-time reports on a media buy's reporting_webhook, which carry no
// notification_id and a sequence_number per reporting stream.
const (
	NotificationScheduled    = "scheduled"
	NotificationFinal        = "final"
	NotificationDelayed      = "delayed"
	NotificationAdjusted     = "adjusted"
	NotificationWindowUpdate = "window_update"
)

// DeliveryReport reports whether notificationType is one of the
// delivery-report types, which AdCP sends without a notification_id.
func DeliveryReport(notificationType string) bool {
	switch notificationType {
	case NotificationScheduled, NotificationFinal, NotificationDelayed, NotificationAdjusted, NotificationWindowUpdate:
		return true
	}
	return false
}
