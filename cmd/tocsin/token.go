package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/tocsin/tocsin/internal/auth"
)

func runToken(_ context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("tocsin token", flag.ContinueOnError)
	sub := fs.String("sub", "", "the recipient (`sub` claim); required")
	ttl := fs.Duration("ttl", time.Hour, "lifetime of the token")
	scope := fs.String("scope", "", "space-separated scopes, e.g. \"tocsin:publish\"")
	secret := fs.String("jwt-secret", os.Getenv("TOCSIN_JWT_SECRET"), "HS256 secret (env TOCSIN_JWT_SECRET)")
	issuer := fs.String("jwt-issuer", os.Getenv("TOCSIN_JWT_ISSUER"), "`iss` claim (env TOCSIN_JWT_ISSUER)")
	audience := fs.String("jwt-audience", os.Getenv("TOCSIN_JWT_AUDIENCE"), "`aud` claim (env TOCSIN_JWT_AUDIENCE)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *sub == "" {
		return errors.New("tocsin token: --sub is required")
	}
	tok, err := auth.Mint(auth.Config{HS256Secret: []byte(*secret), Issuer: *issuer, Audience: *audience}, *sub, *ttl, *scope)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, tok)
	return nil
}
