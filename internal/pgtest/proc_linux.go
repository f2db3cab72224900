package pgtest

import "syscall"

// clusterSupported says whether pgtest can start its own cluster here.
const clusterSupported = true

// procAttr puts a child in its own process group and runs it as u unless u is
// nil. If the test process dies without calling Main, the kernel sends the
// child SIGINT, a fast shutdown, so the cluster is not left running. (Linux
// sends it when the thread that started the child exits; Go only ends threads
// that a goroutine locked and never unlocked.)
func procAttr(u *osUser) *syscall.SysProcAttr {
	a := &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGINT}
	if u != nil {
		a.Credential = &syscall.Credential{Uid: u.uid, Gid: u.gid}
	}
	return a
}

// killGroup kills the process group led by pid.
func killGroup(pid int) { _ = syscall.Kill(-pid, syscall.SIGKILL) }
