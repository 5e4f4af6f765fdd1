//go:build !linux

package stream

import "net"

// watchPeer calls gone when conn's peer closes the connection or it breaks.
func watchPeer(conn net.Conn, gone func()) (unwatch func()) { return readPeer(conn, gone) }
