package bench

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// CPU time from /proc: what a process, or a whole PostgreSQL server, spent on a core.

// procStat returns a process's parent and its CPU times in clock ticks (1/100 s): its own
// user+system time, and that of its children it has reaped.
func procStat(pid int) (ppid int, own, reaped int64, ok bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, 0, false
	}
	// Fields after the command name, which is in parentheses and may hold spaces.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	if len(f) < 15 {
		return 0, 0, 0, false
	}
	num := func(i int) int64 { v, _ := strconv.ParseInt(f[i], 10, 64); return v }
	return int(num(1)), num(11) + num(12), num(13) + num(14), true
}

// cpuTicks is a process's user+system CPU time in clock ticks.
func cpuTicks(pid int) int64 {
	_, own, _, _ := procStat(pid)
	return own
}

// postmasterPID returns the pid of the PostgreSQL server pool is connected to, when that
// server runs on this machine (0 otherwise): the parent of one of its backends.
func postmasterPID(ctx context.Context, pool *pgxpool.Pool) int {
	var backend int
	if err := pool.QueryRow(ctx, backendPidSQL).Scan(&backend); err != nil {
		return 0
	}
	ppid, _, _, ok := procStat(backend)
	if !ok {
		return 0
	}
	return ppid
}

// serverTicks is the CPU time of a PostgreSQL server: the postmaster, every live child
// (backends, walwriter, checkpointer…), and the children that already exited (reaped by
// the postmaster).
func serverTicks(postmaster int) int64 {
	_, own, reaped, ok := procStat(postmaster)
	if !ok {
		return 0
	}
	total := own + reaped
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ppid, own, _, ok := procStat(pid); ok && ppid == postmaster {
			total += own
		}
	}
	return total
}

// cpuWatch measures the CPU that a Tocsin process and a PostgreSQL server use over an
// interval, as shares of one core.
type cpuWatch struct {
	tocsin, postgres int // pids; postgres 0 when the server is not on this machine
	at               time.Time
	t0, p0           int64
}

func startCPUWatch(tocsin, postgres int) *cpuWatch {
	w := &cpuWatch{tocsin: tocsin, postgres: postgres, at: time.Now(), t0: cpuTicks(tocsin)}
	if postgres != 0 {
		w.p0 = serverTicks(postgres)
	}
	return w
}

// CPUShare is CPU used over an interval, as shares of one core (0.05 = 5 %); Postgres is
// negative when the server is not on this machine.
type CPUShare struct{ Tocsin, Postgres float64 }

func (w *cpuWatch) stop() CPUShare {
	secs := time.Since(w.at).Seconds()
	s := CPUShare{Tocsin: float64(cpuTicks(w.tocsin)-w.t0) / 100 / secs, Postgres: -1}
	if w.postgres != 0 {
		s.Postgres = float64(serverTicks(w.postgres)-w.p0) / 100 / secs
	}
	return s
}

func (s CPUShare) String() string {
	pg := "n/a (not on this machine)"
	if s.Postgres >= 0 {
		pg = fmt.Sprintf("%.1f%%", 100*s.Postgres)
	}
	return fmt.Sprintf("tocsin %.1f%% + postgres %s of a core", 100*s.Tocsin, pg)
}

// loadAverage is the machine's 1, 5 and 15 minute load averages, as /proc/loadavg says
// them ("?" elsewhere).
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// runQueueWait is the time a process has spent runnable but waiting for a core, as the
// kernel counts it (/proc/PID/schedstat; ok is false where it does not).
func runQueueWait(pid int) (time.Duration, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/schedstat", pid))
	if err != nil {
		return 0, false
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0, false
	}
	ns, err := strconv.ParseInt(f[1], 10, 64)
	return time.Duration(ns), err == nil
}
