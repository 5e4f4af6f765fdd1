package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/tocsin/tocsin/internal/auth"
)

func runToken(_ context.Context, args []string, stdout io.Writer) error {
	fs := newFlagSet("tocsin token", "tocsin token --sub ID [flags]",
		"Mint an HS256 token for development and scripts. Without --jwt-secret or\n"+
			"TOCSIN_JWT_SECRET, uses the secret of `tocsin dev` in this folder.")
	sub := fs.String("sub", "", "the recipient (sub claim); required")
	ttl := fs.Duration("ttl", time.Hour, "lifetime of the token")
	scope := fs.String("scope", "", `space-separated scopes, e.g. "tocsin:publish"`)
	cfg, err := fs.load(args, "jwt-secret", "jwt-issuer", "jwt-audience")
	if err != nil {
		return err
	}
	if *sub == "" {
		return errors.New("--sub is required: the recipient the token is for")
	}
	if *ttl <= 0 {
		return fmt.Errorf("--ttl must be positive, got %s", *ttl)
	}
	useDevSecret(cfg)
	if err := checkSecret(cfg.JWTSecret); err != nil {
		return err
	}
	tok, err := auth.Mint(auth.Config{HS256Secret: []byte(cfg.JWTSecret), Issuer: cfg.JWTIssuer, Audience: cfg.JWTAudience}, *sub, *ttl, *scope)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, tok)
	return nil
}

// checkSecret says which flag and variable to set when the HS256 secret is missing or short.
func checkSecret(secret string) error {
	switch {
	case secret == "":
		return fmt.Errorf("no JWT secret: set TOCSIN_JWT_SECRET or --jwt-secret (at least %d bytes)", auth.MinSecretLen)
	case len(secret) < auth.MinSecretLen:
		return fmt.Errorf("JWT secret too short: TOCSIN_JWT_SECRET or --jwt-secret has %d bytes, needs at least %d",
			len(secret), auth.MinSecretLen)
	}
	return nil
}
