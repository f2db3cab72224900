package webhook

import (
	"encoding/json"
	"os"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestProtocolForTaskType(t *testing.T) {
	t.Parallel()
	want := map[Protocol][]TaskType{
		ProtocolMediaBuy: {TaskCreateMediaBuy, TaskUpdateMediaBuy, TaskGetProducts, TaskSyncAccounts,
			TaskGetAccountFinancials, TaskSyncEventSources, TaskSyncAudiences, TaskSyncCatalogs, TaskLogEvent},
		ProtocolCreative: {TaskSyncCreatives, TaskGetCreativeDelivery},
		ProtocolSignals:  {TaskActivateSignal, TaskGetSignals},
		ProtocolGovernance: {TaskCreatePropertyList, TaskUpdatePropertyList, TaskGetPropertyList,
			TaskListPropertyLists, TaskDeletePropertyList},
		ProtocolBrand: {TaskGetBrandIdentity, TaskGetRights, TaskAcquireRights},
	}
	n := 0
	for p, tasks := range want {
		for _, task := range tasks {
			got, ok := ProtocolForTaskType(task)
			require.True(t, ok, task)
			require.Equal(t, p, got, task)
			n++
		}
	}
	require.Len(t, taskProtocols, n, "no task type maps to a protocol the issue did not name")
	for _, task := range []TaskType{TaskBuyProducts, TaskSearchBrands, TaskBuildCreative, "brand_new_task"} {
		_, ok := ProtocolForTaskType(task)
		require.False(t, ok, task)
	}
}

func TestEnumsMatchSpec(t *testing.T) {
	t.Parallel()
	load := func(name string) []string {
		raw, err := os.ReadFile("testdata/" + name)
		require.NoError(t, err)
		var doc struct{ Enum []string }
		require.NoError(t, json.Unmarshal(raw, &doc))
		require.NotEmpty(t, doc.Enum)
		return doc.Enum
	}
	for _, s := range load("enum-task-status.json") {
		require.True(t, Status(s).Valid(), s)
	}
	for _, p := range load("enum-adcp-protocol.json") {
		require.True(t, Protocol(p).Valid(), p)
	}
	known := map[TaskType]bool{}
	for _, task := range allTaskTypes {
		known[task] = true
	}
	spec := load("enum-task-type.json")
	require.Len(t, allTaskTypes, len(spec))
	for _, task := range spec {
		require.True(t, known[TaskType(task)], "no constant for task type %q", task)
		require.True(t, validTaskType(TaskType(task)), task)
	}
}

var allTaskTypes = []TaskType{
	TaskCreateMediaBuy, TaskUpdateMediaBuy, TaskBuyProducts, TaskAcceptProposal, TaskControlMediaBuy,
	TaskMediaBuyDelivery, TaskSyncCreatives, TaskBuildCreative, TaskPreviewCreative, TaskActivateSignal,
	TaskGetProducts, TaskRequestProposals, TaskRefineProposals, TaskDeclineProposals, TaskGetSignals,
	TaskCreatePropertyList, TaskUpdatePropertyList, TaskGetPropertyList, TaskListPropertyLists,
	TaskDeletePropertyList, TaskSyncAccounts, TaskGetAccountFinancials, TaskGetCreativeDelivery,
	TaskSyncEventSources, TaskSyncAudiences, TaskSyncCatalogs, TaskLogEvent, TaskGetBrandIdentity,
	TaskSearchBrands, TaskGetRights, TaskAcquireRights, TaskUpdateRights, TaskSyncAgentNotificationConfigs,
}

func TestValidTaskType(t *testing.T) {
	t.Parallel()
	for in, want := range map[TaskType]bool{
		"create_media_buy": true, "log_event": true, "a": true, "v2_task": true, "x9": true,
		"": false, "_x": false, "x_": false, "a__b": false, "Create": false, "9lives": false, "a-b": false, "a b": false,
	} {
		require.Equal(t, want, validTaskType(in), "%q", in)
	}
}
