//go:build !unix

package httpapi

// DefaultMaxConnections is 1024 where the open-files limit cannot be read.
func DefaultMaxConnections() int { return 1024 }
