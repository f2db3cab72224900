//go:build !linux

package webhook_test

import "syscall"

// faultWorkerAttr: elsewhere a worker process may outlive a test binary
// that crashes.
func faultWorkerAttr() *syscall.SysProcAttr { return nil }
