// Package demo installs the small ePortfolio schema and routes that `tocsin dev` serves.
package demo

import (
	"context"
	_ "embed"
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tocsin/tocsin/internal/routes"
)

//go:embed schema.sql
var schemaSQL string

// RoutesYAML is the demo's routes file.
//
//go:embed routes.yaml
var RoutesYAML []byte

// Users are the demo's users, whose tokens `tocsin dev` prints.
var Users = []string{"alice", "bob"}

// Install creates the demo schema (idempotently) and applies its routes.
func Install(ctx context.Context, pool *pgxpool.Pool) (routes.Summary, error) {
	if _, err := pool.Exec(ctx, schemaSQL); err != nil {
		return routes.Summary{}, fmt.Errorf("creating the demo schema: %w", err)
	}
	f, err := routes.Parse("demo/routes.yaml", RoutesYAML)
	if err != nil {
		return routes.Summary{}, err
	}
	return routes.Apply(ctx, pool, f)
}
