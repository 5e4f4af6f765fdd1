package settings_test

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tocsin/tocsin/internal/pgtest"
	"github.com/tocsin/tocsin/internal/settings"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func closed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

func TestSetAndWatchPush(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	ctx := context.Background()
	var mu sync.Mutex
	var changes []bool
	w := settings.New(db.Pool, settings.Config{PushFunc: func(on bool) {
		mu.Lock()
		changes = append(changes, on)
		mu.Unlock()
	}}, quiet)

	on, off := w.Push()
	require.True(t, on, "push is assumed on before the first read")
	require.NoError(t, w.Refresh(ctx))
	on, _ = w.Push()
	require.True(t, on, "push is on by default")

	require.NoError(t, settings.Set(ctx, db.Pool, settings.SwitchPush, false))
	got, err := settings.SettingPush(ctx, db.Pool)
	require.NoError(t, err)
	require.False(t, got)
	require.False(t, closed(off), "a Watcher only learns at its next read")
	require.NoError(t, w.Refresh(ctx))
	on, off2 := w.Push()
	require.False(t, on)
	require.True(t, closed(off), "push off closes the channel streams select on")
	require.True(t, closed(off2))

	require.NoError(t, settings.Set(ctx, db.Pool, settings.SwitchPush, true))
	require.NoError(t, w.Refresh(ctx))
	on, off3 := w.Push()
	require.True(t, on)
	require.False(t, closed(off3), "push on: a fresh open channel")
	require.NoError(t, w.Refresh(ctx))
	mu.Lock()
	require.Equal(t, []bool{false, true}, changes, "PushFunc sees each change once")
	mu.Unlock()

	// No row at all reads as on.
	_, err = db.Pool.Exec(ctx, `DELETE FROM tocsin.setting WHERE key = 'push'`)
	require.NoError(t, err)
	got, err = settings.SettingPush(ctx, db.Pool)
	require.NoError(t, err)
	require.True(t, got)
}

// Run reads the switches every Interval; a read that fails keeps the last value.
func TestRunFollowsTheTableAndKeepsTheLastValueOnErrors(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	ctx, cancel := context.WithCancel(context.Background())
	w := settings.New(db.Pool, settings.Config{Interval: 10 * time.Millisecond}, quiet)
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()

	require.NoError(t, settings.Set(ctx, db.Pool, settings.SwitchPush, false))
	require.Eventually(t, func() bool { on, _ := w.Push(); return !on }, 10*time.Second, 5*time.Millisecond)

	// The table becomes unreadable: the watcher keeps "off" instead of guessing.
	_, err := db.Pool.Exec(ctx, `ALTER TABLE tocsin.setting RENAME TO setting_away`)
	require.NoError(t, err)
	require.Error(t, w.Refresh(ctx))
	on, _ := w.Push()
	require.False(t, on)
	_, err = db.Pool.Exec(ctx, `ALTER TABLE tocsin.setting_away RENAME TO setting;
		UPDATE tocsin.setting SET value = 'true' WHERE key = 'push'`)
	require.NoError(t, err)
	require.Eventually(t, func() bool { on, _ := w.Push(); return on }, 10*time.Second, 5*time.Millisecond)

	cancel()
	require.NoError(t, <-done)
}

// The capture switch is what route triggers read: its marker follows Set.
func TestSetCapture(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	ctx := context.Background()
	enabled := func() bool {
		var on bool
		require.NoError(t, db.Pool.QueryRow(ctx, `SELECT tocsin.capture_enabled()`).Scan(&on))
		return on
	}
	require.True(t, enabled())
	require.NoError(t, settings.Set(ctx, db.Pool, settings.SwitchCapture, false))
	require.False(t, enabled())
	require.NoError(t, settings.Set(ctx, db.Pool, settings.SwitchCapture, true))
	require.True(t, enabled())

	tx, err := db.Pool.Begin(ctx)
	require.NoError(t, err)
	require.NoError(t, settings.Set(ctx, tx, settings.SwitchCapture, false))
	require.NoError(t, tx.Rollback(ctx))
	require.True(t, enabled(), "Set commits with the caller's transaction")
}

func TestParseSwitch(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"push", "capture"} {
		sw, err := settings.ParseSwitch(name)
		require.NoError(t, err)
		require.Equal(t, name, string(sw))
	}
	_, err := settings.ParseSwitch("Push")
	require.ErrorIs(t, err, settings.ErrUnknownSwitch)
	require.ErrorIs(t, settings.Set(context.Background(), nil, "sequencer", true), settings.ErrUnknownSwitch)
}
