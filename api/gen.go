// Package api is Tocsin's HTTP contract: openapi.yaml and the Go code generated from it
// (models, a gin server interface, a strict server interface and the embedded spec).
//
// api.gen.go is generated; never edit it by hand. Change openapi.yaml, then run
// `go generate ./api`; TestGeneratedCodeIsCurrent fails while the two disagree.
package api

//go:generate go tool oapi-codegen -config cfg.yaml openapi.yaml
