package main

import (
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// workerAttr makes a worker process die with the harness.
func workerAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

// machineCPU is the machine's busy CPU time since boot, every core and
// process (/proc/stat's first line but idle, iowait and the time the
// hypervisor took); 0 when it cannot be read.
func machineCPU() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0
	}
	var ticks int64
	for i, v := range f[1:] {
		if i == 3 || i == 4 || i == 7 { // idle, iowait, steal
			continue
		}
		if i >= 8 { // guest time is counted in user time already
			break
		}
		n, _ := strconv.ParseInt(v, 10, 64)
		ticks += n
	}
	return time.Duration(ticks) * time.Second / 100 // USER_HZ
}
