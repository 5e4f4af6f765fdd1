package config_test

import (
	"flag"
	"io"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tocsin/tocsin/internal/capture"
	"github.com/tocsin/tocsin/internal/config"
	"github.com/tocsin/tocsin/internal/grouping"
	"github.com/tocsin/tocsin/internal/httpapi"
	"github.com/tocsin/tocsin/internal/hub"
	"github.com/tocsin/tocsin/internal/publish"
	"github.com/tocsin/tocsin/internal/retention"
	"github.com/tocsin/tocsin/internal/sequencer"
	"github.com/tocsin/tocsin/internal/stream"
	"github.com/tocsin/tocsin/internal/ticket"
)

// A package's own default (what it does when the composition root passes nothing) and the
// configuration's default (what the README documents, see TestREADMEListsEverySetting)
// are the same value: a package used on its own behaves as a node does.
func TestPackageDefaultsAgreeWithTheConfiguration(t *testing.T) {
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	c, err := config.Load(fs, nil)
	require.NoError(t, err)
	for _, d := range []struct {
		setting       string
		config, owner any
	}{
		{"--long-poll-max", c.LongPollMax, httpapi.DefaultLongPollMax},
		{"--poll-interval", c.PollInterval, httpapi.DefaultPollInterval},
		{"--max-streams-per-recipient", c.MaxStreamsPerRecipient, httpapi.DefaultMaxStreamsPerRecipient},
		{"--max-message-bytes", int64(c.MaxMessageBytes), int64(httpapi.DefaultMaxMessageBytes)},
		{"--body-read-timeout", c.BodyReadTimeout, httpapi.DefaultBodyReadTimeout},
		{"--sequencer-interval", c.SequencerInterval, sequencer.PollIntervalDefault},
		{"--message-group-window", c.MessageGroupWindow, sequencer.MessageGroupWindowDefault},
		{"--message-group-max", c.MessageGroupMax, sequencer.MessageGroupMaxDefault},
		{"--fallback-interval", c.FallbackInterval, hub.FallbackIntervalDefault},
		{"--sse-buffer", c.SSEBuffer, hub.BufferDefault},
		{"--sse-heartbeat", c.SSEHeartbeatInterval, stream.HeartbeatIntervalDefault},
		{"--sse-max-lifetime", c.SSEMaxLifetime, stream.MaxLifetimeDefault},
		{"--sse-write-timeout", c.SSEWriteTimeout, stream.WriteTimeoutDefault},
		{"--drain-window", c.DrainWindow, stream.DrainWindowDefault},
		{"--stream-ticket-ttl", c.StreamTicketTTL, ticket.TTLDefault},
		{"--retention-change", c.RetentionChange, retention.ChangeTTLDefault},
		{"--retention-inbox", c.RetentionInbox, retention.InboxTTLDefault},
		{"--idempotency-ttl", c.IdempotencyTTL, retention.IdempotencyTTLDefault},
		{"--slot-wal-warn-bytes", c.SlotWALWarnBytes, int64(capture.SlotWALWarnBytesDefault)},
		{"--group-tick", c.GroupTick, grouping.TickDefault},
		{"--max-recipients", c.MaxRecipients, publish.MaxRecipientsDefault},
	} {
		if dur, ok := d.owner.(time.Duration); ok {
			require.Equal(t, dur.String(), d.config.(time.Duration).String(), d.setting)
			continue
		}
		require.EqualValues(t, d.owner, d.config, d.setting)
	}
}
