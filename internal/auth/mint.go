package auth

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Mint returns an HS256 token for sub that expires after ttl, with cfg's issuer and
// audience when set and scope (space-separated) when not empty. It serves `tocsin token`
// and tests; production tokens normally come from the application's identity provider.
func Mint(cfg Config, sub string, ttl time.Duration, scope string) (string, error) {
	if err := cfg.validate(); err != nil {
		return "", fmt.Errorf("minting token: %w", err)
	}
	if sub == "" {
		return "", errors.New("minting token: sub is empty")
	}
	if ttl <= 0 {
		return "", fmt.Errorf("minting token: ttl %s is not positive", ttl)
	}
	now := time.Now()
	claims := tokenClaims{
		RegisteredClaims: jwt.RegisteredClaims{
			Subject:   sub,
			Issuer:    cfg.Issuer,
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
		},
		Scope: strings.Fields(scope),
	}
	if cfg.Audience != "" {
		claims.Audience = jwt.ClaimStrings{cfg.Audience}
	}
	token, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(cfg.HS256Secret)
	if err != nil {
		return "", fmt.Errorf("signing token: %w", err)
	}
	return token, nil
}
