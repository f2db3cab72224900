//go:build !linux

package pgtest

import "syscall"

// clusterSupported says whether pgtest can start its own cluster here.
const clusterSupported = false

func procAttr(*osUser) *syscall.SysProcAttr { return nil }

func killGroup(int) {}
