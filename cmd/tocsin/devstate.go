package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/tocsin/tocsin/internal/config"
)

// devDir is where `tocsin dev` keeps its state, in the folder it runs in (git-ignored):
//
//	pg/         the private cluster (data directory and server log)
//	secret      the development HS256 secret
//	dev.json    the ports kept from one start to the next, and the running dev's pid and API
//	dev.lock    held (flock) while a `tocsin dev` runs here
const devDir = ".tocsin"

// devState is .tocsin/dev.json.
type devState struct {
	// DatabasePort is the private cluster's port, kept so that a URL taken from the banner
	// stays valid; 0 when dev uses TOCSIN_DATABASE_URL.
	DatabasePort int `json:"database_port,omitempty"`
	// APIPort is the API's port when neither --addr nor TOCSIN_ADDR names one.
	APIPort int `json:"api_port,omitempty"`
	// PID and API describe the `tocsin dev` that holds dev.lock (stale once it is free).
	PID int    `json:"pid,omitempty"`
	API string `json:"api,omitempty"`
}

func readDevState() (devState, error) {
	var st devState
	b, err := os.ReadFile(filepath.Join(devDir, "dev.json"))
	if errors.Is(err, os.ErrNotExist) {
		return st, nil
	} else if err != nil {
		return st, err
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return devState{}, fmt.Errorf("reading %s: %w", filepath.Join(devDir, "dev.json"), err)
	}
	return st, nil
}

func writeDevState(st devState) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(devDir, 0o755); err != nil {
		return err
	}
	tmp := filepath.Join(devDir, "dev.json.tmp")
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(devDir, "dev.json"))
}

// lockDev takes .tocsin/dev.lock for this process, or returns ok=false when another
// `tocsin dev` holds it. The kernel releases the lock when the process dies, even by
// kill -9, so a stale lock cannot block the next start.
func lockDev() (f *os.File, ok bool, err error) {
	if err := os.MkdirAll(devDir, 0o755); err != nil {
		return nil, false, err
	}
	f, err = os.OpenFile(filepath.Join(devDir, "dev.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, false, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, false, nil
		}
		return nil, false, fmt.Errorf("locking %s: %w", f.Name(), err)
	}
	return f, true, nil
}

func devDatabaseURL(port int) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/tocsin?sslmode=disable", port)
}

// devSource records that a command took a setting from .tocsin/, for its error messages.
type devSource struct{ database bool }

// useDevDatabase gives cfg the database of `tocsin dev` in this folder when neither
// --database-url nor TOCSIN_DATABASE_URL named one, and says so on stderr.
func useDevDatabase(cfg *config.Config) devSource {
	if cfg.DatabaseURL != "" {
		return devSource{}
	}
	st, err := readDevState()
	if err != nil || st.DatabasePort == 0 {
		return devSource{}
	}
	cfg.DatabaseURL = devDatabaseURL(st.DatabasePort)
	fmt.Fprintf(stderr, "tocsin: using the database of `tocsin dev` from %s/ (%s)\n", devDir, cfg.DatabaseURL)
	return devSource{database: true}
}

// useDevSecret gives cfg the JWT secret of `tocsin dev` in this folder when neither
// --jwt-secret nor TOCSIN_JWT_SECRET gave one, and says so on stderr.
func useDevSecret(cfg *config.Config) {
	if cfg.JWTSecret != "" {
		return
	}
	path := filepath.Join(devDir, "secret")
	b, err := os.ReadFile(path)
	if err != nil {
		return
	}
	cfg.JWTSecret = strings.TrimSpace(string(b))
	fmt.Fprintf(stderr, "tocsin: using the JWT secret of `tocsin dev` from %s\n", path)
}
