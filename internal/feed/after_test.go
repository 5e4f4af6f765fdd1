package feed

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/require"
)

type stateFunc func(context.Context) (State, error)

func (f stateFunc) FeedState(ctx context.Context) (State, error) { return f(ctx) }

func TestResolveAfter(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	reads := 0
	r := stateFunc(func(context.Context) (State, error) {
		reads++
		return State{Epoch: "abcd", Head: 42}, nil
	})

	a, err := ResolveAfter(ctx, r, "")
	require.NoError(t, err)
	require.True(t, a.Oldest(), "omitted: the oldest retained entry")
	require.Zero(t, reads, "the oldest needs no read")

	a, err = ResolveAfter(ctx, r, "now")
	require.NoError(t, err)
	require.Equal(t, After{Epoch: "abcd", Position: 42}, a, "now: the head")
	require.Equal(t, 1, reads)

	a, err = ResolveAfter(ctx, r, "wxyz-7")
	require.NoError(t, err)
	require.Equal(t, After{Epoch: "wxyz", Position: 7}, a, "a cursor is taken as it is; Check judges it")
	require.Equal(t, "wxyz-7", a.Cursor().String())

	_, err = ResolveAfter(ctx, r, "NOW")
	require.ErrorIs(t, err, ErrCursorMalformed)

	boom := errors.New("database down")
	_, err = ResolveAfter(ctx, stateFunc(func(context.Context) (State, error) { return State{}, boom }), "now")
	require.ErrorIs(t, err, boom)
}

func TestCheck(t *testing.T) {
	t.Parallel()
	st := State{Epoch: "abcd", Head: 100}
	for _, tc := range []struct {
		name    string
		a       After
		horizon int64
		expired bool
	}{
		{"at the head", After{"abcd", 100}, 0, false},
		{"an old cursor of a recipient who lost nothing", After{"abcd", 1}, 0, false},
		{"at the horizon: nothing after it was removed", After{"abcd", 50}, 50, false},
		{"below the horizon: a gap", After{"abcd", 49}, 50, true},
		{"past the head: a diverged history", After{"abcd", 101}, 0, true},
		{"another generation", After{"wxyz", 10}, 0, true},
		{"another generation at the same position", After{"wxyz", 100}, 0, true},
	} {
		got, err := tc.a.Check(st, tc.horizon)
		if tc.expired {
			require.ErrorIs(t, err, ErrCursorExpired, tc.name)
			require.ErrorContains(t, err, tc.a.Cursor().String(), tc.name)
			continue
		}
		require.NoError(t, err, tc.name)
		require.Equal(t, tc.a, got, tc.name)
	}

	// The oldest never expires, whatever retention removed, and binds to the read's epoch.
	got, err := After{}.Check(st, 99)
	require.NoError(t, err)
	require.Equal(t, After{Epoch: "abcd"}, got)
	require.False(t, got.Oldest())
	// Once bound, it is a cursor like any other.
	_, err = got.Check(st, 99)
	require.ErrorIs(t, err, ErrCursorExpired)
}

func TestEntryPosition(t *testing.T) {
	t.Parallel()
	p, err := EntryPosition("abcd-12", "abcd")
	require.NoError(t, err)
	require.Equal(t, int64(12), p)
	_, err = EntryPosition("wxyz-12", "abcd")
	require.ErrorIs(t, err, ErrCursorExpired)
	_, err = EntryPosition("12", "abcd")
	require.ErrorIs(t, err, ErrCursorMalformed)
}
