package main

import "syscall"

// workerAttr makes a worker process die with the harness.
func workerAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
