package webhook_test

import "syscall"

// faultWorkerAttr makes a worker process die with the test binary.
func faultWorkerAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
