//go:build unix

package httpapi

import "syscall"

// DefaultMaxConnections is 80% of the process's open-files limit (RLIMIT_NOFILE), leaving
// room for database connections, listeners and files; 1024 when the limit is unknown.
func DefaultMaxConnections() int {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil || rl.Cur == 0 {
		return 1024
	}
	n := min(rl.Cur/10*8, 1<<30) // an "unlimited" limit is huge, not infinite
	return max(int(n), 1)
}
