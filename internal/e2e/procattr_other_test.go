//go:build !linux

package e2e

import "os/exec"

// dieWithParent is a no-op where the kernel cannot kill a child with its parent; the
// tests' cleanups still stop everything they started.
func dieWithParent(*exec.Cmd) {}
