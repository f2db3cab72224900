//go:build !linux

package main

import (
	"syscall"
	"time"
)

func workerAttr() *syscall.SysProcAttr { return nil }

// machineCPU is not measured here: the CPU column stays empty.
func machineCPU() time.Duration { return 0 }
