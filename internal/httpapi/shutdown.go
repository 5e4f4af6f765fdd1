package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/tocsin/tocsin/internal/stream"
)

// Stopping behind a proxy. http.Server.Shutdown closes every idle keep-alive connection at
// once, and a proxy that is sending a request on one of them at that moment gets no answer;
// it cannot replay a POST, so its client sees a 502 or a dropped connection. Shutdown stops
// in three steps instead:
//
//  1. Drain: parked long polls are answered, streams end over the drain window, and every
//     request that arrives from now on is answered with "Connection: close", so that a
//     connection closes right after an answer, when the proxy knows not to reuse it;
//  2. the listener closes: new connections are refused, which proxies retry elsewhere;
//  3. when every connection has closed, or at the end of the drain window,
//     http.Server.Shutdown closes what is left (connections nobody used during the whole
//     window) and waits for requests still running.

// connCounter counts a server's open connections (http.Server.ConnState).
type connCounter struct{ open atomic.Int64 }

func (cc *connCounter) observe(_ net.Conn, state http.ConnState) {
	switch state {
	case http.StateNew:
		cc.open.Add(1)
	case http.StateClosed, http.StateHijacked:
		cc.open.Add(-1)
	}
}

// connsPollInterval is how often Shutdown looks whether every connection has closed.
const connsPollInterval = 10 * time.Millisecond

// Shutdown stops srv, an http.Server from HTTPServer that serves on ln, as described
// above; srv.Serve then returns an error for which ServeStopped is true. Shutdown returns
// when srv has stopped, or ctx's error when ctx ends first.
func (s *Server) Shutdown(ctx context.Context, srv *http.Server, ln net.Listener) error {
	s.Drain()
	if err := ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("closing the API listener: %w", err)
	}
	window := s.cfg.Stream.DrainWindow
	if window <= 0 {
		window = stream.DrainWindowDefault
	}
	end := time.NewTimer(window)
	defer end.Stop()
	tick := time.NewTicker(connsPollInterval)
	defer tick.Stop()
wait:
	for s.conns.open.Load() > 0 {
		select {
		case <-tick.C:
		case <-end.C:
			break wait
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if err := srv.Shutdown(ctx); err != nil && !errors.Is(err, net.ErrClosed) {
		return err
	}
	return nil
}

// ServeStopped reports whether err, returned by http.Server.Serve, means that the server
// was stopped (by Shutdown or http.Server.Shutdown) rather than failed.
func ServeStopped(err error) bool {
	return errors.Is(err, http.ErrServerClosed) || errors.Is(err, net.ErrClosed)
}
