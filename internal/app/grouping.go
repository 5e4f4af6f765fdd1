package app

import (
	"fmt"
	"log/slog"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"riverqueue.com/riverui"

	"github.com/tocsin/tocsin/internal/config"
	"github.com/tocsin/tocsin/internal/grouping"
	"github.com/tocsin/tocsin/internal/httpapi"
	"github.com/tocsin/tocsin/internal/inbox"
	"github.com/tocsin/tocsin/internal/publish"
)

// groupingConfig is grouping's River configuration for this node.
func groupingConfig(cfg *config.Config, wakeFunc func()) grouping.Config {
	return grouping.Config{Tick: cfg.GroupTick, WakeFunc: wakeFunc}
}

// addGrouping adds the flush and sweep workers, the flush queue and the sweep's periodic
// job to a River configuration.
func addGrouping(rc *river.Config, pool *pgxpool.Pool, gc grouping.Config, log *slog.Logger) {
	grouping.AddWorkers(rc.Workers, pool, gc, log.With(slog.String("service", "grouping")))
	rc.Queues[grouping.Queue] = grouping.QueueConfig(gc)
	rc.PeriodicJobs = append(rc.PeriodicJobs, grouping.PeriodicJobs(gc)...)
}

// inboxDeps returns the API's inbox, publisher and River UI.
func (n *Node) inboxDeps() (httpapi.Inbox, httpapi.Publisher, *riverui.Handler, error) {
	pub, err := publish.New(n.pool, publish.Config{PolicySQL: n.cfg.PublishPolicySQL,
		MaxRecipients: n.cfg.MaxRecipients, WakeFunc: n.Sequencer.Wake})
	if err != nil {
		return nil, nil, nil, fmt.Errorf("--publish-policy-sql (TOCSIN_PUBLISH_POLICY_SQL): %w", err)
	}
	var ui *riverui.Handler
	if n.river != nil {
		ui, err = riverui.NewHandler(&riverui.HandlerOpts{Endpoints: riverui.NewEndpoints(n.river, nil),
			Prefix: httpapi.RiverUIPrefix, Logger: n.log.With(slog.String("service", "riverui"))})
		if err != nil {
			return nil, nil, nil, fmt.Errorf("configuring the River UI: %w", err)
		}
	}
	return inbox.NewStore(n.pool, n.Sequencer.Wake), pub, ui, nil
}
