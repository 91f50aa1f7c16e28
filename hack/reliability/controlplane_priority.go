package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// In a cluster the API server and etcd run on machines of their own: what a controller spends
// on CPU does not delay them. Here they share two cores with the manager, the emulator and the
// benchmark, and in a mass revocation that decides the last Close: the API server marks the
// deletions one at a time, a deletion cannot be closed before it is marked, and the closes' own
// CPU slows that marking by a quarter. --bench-control-plane-first gives the control plane the
// CPU first, as its own machines would, to measure the operator against that bound. It is not
// the default: with the control plane first, a single close waits for the API server's bursts
// more than the baseline does, and the latency figures measure that instead.

// controlPlaneNice is the nice value of the control plane's processes in the benchmarks.
const controlPlaneNice = -10

// prioritiseControlPlane sets the nice value of every thread of the kube-apiserver and etcd
// this process started; threads they start later inherit it. Linux keeps the value per thread.
func prioritiseControlPlane() error {
	pids, err := childProcesses("kube-apiserver", "etcd")
	if err != nil {
		return err
	}
	if len(pids) != 2 {
		return fmt.Errorf("found %d control-plane processes, not kube-apiserver and etcd", len(pids))
	}
	for _, pid := range pids {
		tasks, err := os.ReadDir(filepath.Join("/proc", strconv.Itoa(pid), "task"))
		if err != nil {
			return err
		}
		for _, task := range tasks {
			tid, err := strconv.Atoi(task.Name())
			if err != nil {
				continue
			}
			if err := syscall.Setpriority(syscall.PRIO_PROCESS, tid, controlPlaneNice); err != nil {
				return fmt.Errorf("nice %d for process %d: %w", controlPlaneNice, pid, err)
			}
		}
	}
	return nil
}

// childProcesses returns the processes whose parent is this one and whose executable has one of
// names.
func childProcesses(names ...string) ([]int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	self := os.Getpid()
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, so parse after its closing parenthesis.
		end := strings.LastIndexByte(string(stat), ')')
		if end < 0 {
			continue
		}
		fields := strings.Fields(string(stat[end+1:]))
		if len(fields) < 2 {
			continue
		}
		if ppid, _ := strconv.Atoi(fields[1]); ppid != self {
			continue
		}
		exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe"))
		if err != nil {
			continue
		}
		for _, name := range names {
			if filepath.Base(exe) == name {
				pids = append(pids, pid)
			}
		}
	}
	return pids, nil
}
