package main

// The manager's memory at rest with more and more elevations, and what it is made of.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pam-operator/pam-operator/emulator"
)

// memory measures the manager's RSS and heap with 0 and more elevations, and the PAM calls a
// sync interval costs at the first size.
func (b *bench) memory(ctx context.Context) error {
	// A manager started afresh: the empty baseline holds nothing the benchmarks before left.
	b.manager.stop()
	if err := b.startManager(ctx); err != nil {
		return err
	}
	if err := b.settle(ctx); err != nil {
		return err
	}
	rss0, peak0, err := b.restingRSS(ctx, benchSyncInterval)
	if err != nil {
		return err
	}
	_, heap0, err := b.manager.memoryUse()
	if err != nil {
		return err
	}
	if gogc, ok := b.manager.sample("go_gc_gogc_percent"); ok {
		b.report.add("memory: the manager's GC target (GOGC)", gogc, "%", "")
	}
	b.report.add("memory: RSS at rest (median of samples over a sync interval), 0 elevations", mib(rss0), "MiB", fmt.Sprintf("highest %.2f", mib(peak0)))
	if err := b.reportMemoryMap(0); err != nil {
		return err
	}
	b.report.add("memory: Go heap in use, 0 elevations", mib(heap0), "MiB", "")
	live0, err := b.liveHeap(ctx, 0)
	if err != nil {
		return err
	}
	total := 0
	var rss, peak, prevRSS int64
	prevSize := 0
	for i, size := range b.cfg.memorySizes {
		created := time.Now()
		if _, _, err := b.createElevations(ctx, size-total, nil); err != nil {
			return err
		}
		if err := b.waitSynced(ctx, size); err != nil {
			return err
		}
		if i == 0 {
			b.perElevationSetup = time.Since(created) / time.Duration(size)
		}
		total = size
		if i == 0 {
			// Idle: every elevation Active, nothing due but the periodic sync.
			b.h.pam.ResetCalls()
			start := time.Now()
			if rss, peak, err = b.restingRSS(ctx, 3*benchSyncInterval); err != nil {
				return err
			}
			lists := 0
			for _, c := range b.h.pam.Calls() {
				if c.Endpoint == emulator.EndpointListRequests {
					lists++
				}
			}
			intervals := time.Since(start).Seconds() / benchSyncInterval.Seconds()
			b.report.add(fmt.Sprintf("economy: PAM calls per sync interval, %d idle elevations, 1 server", total),
				float64(lists)/intervals, "calls", "goal: 1 (the number of servers)")
		} else {
			// Measured at rest, as the first size is after its idle intervals: once the burst of
			// creating them has been worked off and as many periodic syncs have run.
			if err := b.settle(ctx); err != nil {
				return err
			}
			if rss, peak, err = b.restingRSS(ctx, 3*benchSyncInterval); err != nil {
				return err
			}
		}
		_, heap, err := b.manager.memoryUse()
		if err != nil {
			return err
		}
		b.report.add(fmt.Sprintf("memory: RSS at rest (median of samples over 3 sync intervals), %d elevations", total), mib(rss), "MiB", fmt.Sprintf("highest %.2f", mib(peak)))
		if err := b.reportMemoryMap(total); err != nil {
			return err
		}
		b.report.add(fmt.Sprintf("memory: Go heap in use, %d elevations", total), mib(heap), "MiB", "")
		b.report.add(fmt.Sprintf("memory: RSS per elevation above empty, at %d", total),
			float64(rss-rss0)/float64(total)/1024, "KiB", "goal: ≤ 3 KiB at 10,000 (medians)")
		b.report.add(fmt.Sprintf("memory: RSS per elevation above empty, highest samples, at %d", total),
			float64(peak-peak0)/float64(total)/1024, "KiB", "")
		if i > 0 {
			// What one more elevation costs, without the fixed cost of having been busy once
			// (code paged in, stacks and buffers grown), which the smaller size carries alone.
			b.report.add(fmt.Sprintf("memory: RSS per elevation from %d to %d", prevSize, total),
				float64(rss-prevRSS)/float64(total-prevSize)/1024, "KiB", "")
		}
		prevSize, prevRSS = total, rss
		if err := b.saveProfile(ctx, fmt.Sprintf("heap-%d.pb.gz", total), "heap?gc=1"); err != nil {
			return err
		}
		live, err := b.liveHeap(ctx, total)
		if err != nil {
			return err
		}
		b.report.add(fmt.Sprintf("memory: live Go heap per elevation above empty, at %d", total),
			float64(live-live0)/float64(total)/1024, "KiB", "after a forced GC: what the elevations hold, without the GC's headroom")
	}
	return b.deleteAll(ctx)
}

// restingRSS samples the manager's RSS every half second for d and returns the median and the
// highest sample. One sample falls anywhere between two collections, and before or after the
// runtime has returned what the last one freed.
func (b *bench) restingRSS(ctx context.Context, d time.Duration) (median, peak int64, err error) {
	var samples []int64
	for end := time.Now().Add(d); time.Now().Before(end); {
		rss, err := b.manager.rss()
		if err != nil {
			return 0, 0, err
		}
		samples = append(samples, rss)
		if !sleepCtx(ctx, 500*time.Millisecond) {
			return 0, 0, ctx.Err()
		}
	}
	slices.Sort(samples)
	return samples[len(samples)/2], samples[len(samples)-1], nil
}

// reportMemoryMap reports how much of the manager's RSS is the binary's own pages, which grow
// as code runs for the first time, not with the elevations held, and keeps the manager's
// smaps_rollup as smaps-<size>.txt.
func (b *bench) reportMemoryMap(size int) error {
	rollup, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", b.manager.cmd.Process.Pid))
	if err != nil {
		return err
	}
	fields := map[string]int64{}
	for line := range strings.Lines(string(rollup)) {
		name, value, ok := strings.Cut(line, ":")
		if kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(value), "kB")), 10, 64); ok && err == nil {
			fields[name] = kb * 1024
		}
	}
	if fields["Rss"] == 0 {
		return fmt.Errorf("smaps_rollup without Rss")
	}
	b.report.add(fmt.Sprintf("memory: of the RSS, the binary's pages (file-backed), %d elevations", size),
		mib(fields["Rss"]-fields["Anonymous"]), "MiB", "")
	if b.profileDir == "" {
		return nil
	}
	return b.writeProfile(fmt.Sprintf("smaps-%d.txt", size), bytes.NewReader(rollup))
}

// liveHeap forces a collection in the manager and returns the heap still allocated after it.
// The runtime's whole account (runtime.MemStats) is kept as heap-<size>.txt: what the RSS holds
// besides the live heap, such as freed memory not yet returned and goroutine stacks.
func (b *bench) liveHeap(ctx context.Context, size int) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, b.pprofURL+"heap?gc=1&debug=1", nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	dump, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("heap dump: HTTP %d: %v", resp.StatusCode, err)
	}
	if b.profileDir != "" {
		if err := b.writeProfile(fmt.Sprintf("heap-%d.txt", size), bytes.NewReader(dump)); err != nil {
			return 0, err
		}
	}
	for line := range strings.Lines(string(dump)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "# HeapAlloc = "); ok {
			return strconv.ParseInt(v, 10, 64)
		}
	}
	return 0, fmt.Errorf("heap dump without HeapAlloc")
}

// rss returns the manager's resident set, in bytes, read from /proc alone.
func (m *managerProc) rss() (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", m.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb * 1024, err
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", m.cmd.Process.Pid)
}

// memoryUse returns the manager's resident set and the Go heap in use, in bytes.
func (m *managerProc) memoryUse() (rss, heap int64, err error) {
	if rss, err = m.rss(); err != nil {
		return 0, 0, err
	}
	inUse, _ := m.sample("go_memstats_heap_inuse_bytes")
	heap = int64(inUse)
	if rss == 0 || heap == 0 {
		return rss, heap, fmt.Errorf("could not read the manager's memory (rss %d, heap %d)", rss, heap)
	}
	return rss, heap, nil
}
