package bench

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

var backendNamesSQL = queries.Get("backend_names")

// sessionWatch measures the CPU of each PostgreSQL session over an interval, from /proc,
// grouped by what the session is (see backend_names): which of Tocsin's connections, or of
// the bench's, or of the server's own processes the CPU went to.
type sessionWatch struct {
	at    time.Time
	names map[int]string
	t0    map[int]int64
}

// startSessionWatch starts a watch of the sessions the server has now; nil when pool's
// server is not on this machine.
func startSessionWatch(ctx context.Context, pool *pgxpool.Pool, postmaster int) *sessionWatch {
	if postmaster == 0 {
		return nil
	}
	rows, err := pool.Query(ctx, backendNamesSQL)
	if err != nil {
		return nil
	}
	type session struct {
		pid  int
		name string
	}
	list, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (s session, err error) {
		err = r.Scan(&s.pid, &s.name)
		return s, err
	})
	if err != nil {
		return nil
	}
	w := &sessionWatch{at: time.Now(), names: map[int]string{}, t0: map[int]int64{}}
	for _, s := range list {
		w.names[s.pid], w.t0[s.pid] = s.name, cpuTicks(s.pid)
	}
	return w
}

// SessionShare is the CPU that the sessions of one name used, as a share of one core.
type SessionShare struct {
	Name  string
	Share float64
}

// SessionShares are the shares of every name, largest first.
type SessionShares []SessionShare

// stop returns each name's share since the start (sessions that ended meanwhile count
// for nothing: they are in the server's total only).
func (w *sessionWatch) stop() SessionShares {
	if w == nil {
		return nil
	}
	secs := time.Since(w.at).Seconds()
	by := map[string]float64{}
	for pid, name := range w.names {
		if d := cpuTicks(pid) - w.t0[pid]; d > 0 {
			by[name] += float64(d) / 100 / secs
		}
	}
	out := SessionShares{}
	for name, share := range by {
		out = append(out, SessionShare{name, share})
	}
	slices.SortFunc(out, func(a, b SessionShare) int {
		return cmp.Or(cmp.Compare(b.Share, a.Share), strings.Compare(a.Name, b.Name))
	})
	return out
}

// String lists the shares, then what the server's total (the postmaster, sessions that
// ended) adds to them.
func (s SessionShares) String(total float64) string {
	if s == nil {
		return "n/a (not on this machine)"
	}
	var b strings.Builder
	sum := 0.0
	for _, p := range s {
		sum += p.Share
		if p.Share >= 0.0005 {
			fmt.Fprintf(&b, "%s %.1f%%, ", p.Name, 100*p.Share)
		}
	}
	fmt.Fprintf(&b, "rest %.1f%%", 100*max(total-sum, 0))
	return b.String()
}
