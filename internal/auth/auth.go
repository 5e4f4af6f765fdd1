// Package auth verifies and mints the bearer JWTs that identify a recipient.
//
// The signing algorithm is pinned by configuration and never taken from the token: a
// Verifier built from an HS256 secret accepts HS256 and nothing else (not "none", not
// HS384/HS512, not RS256 with the secret posing as a public key). Every token must carry
// `exp` and a non-empty `sub`, the recipient; `iss` and `aud` are checked when configured.
//
// Tokens are credentials: nothing in this package logs one or puts one in an error.
package auth

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"
)

// ErrTokenInvalid is returned (wrapped, with the reason) by Verifier.Verify for any token
// that is not accepted: malformed, badly signed, of another algorithm, expired, without
// `exp` or `sub`, or issued by or for someone else.
var ErrTokenInvalid = errors.New("token invalid")

// MinSecretLen is the shortest HS256 secret accepted: RFC 7518 §3.2 requires a key at least
// as long as the hash output (256 bits).
const MinSecretLen = 32

// maxTokenLen bounds the work done on a token before its signature is checked.
const maxTokenLen = 8 << 10

// Config configures token verification and minting.
type Config struct {
	// HS256Secret is the shared HMAC secret, at least MinSecretLen bytes. Required.
	HS256Secret []byte
	// Issuer, when not empty, must equal the token's `iss` (and is written by Mint).
	Issuer string
	// Audience, when not empty, must be among the token's `aud` (and is written by Mint).
	Audience string
	// Leeway tolerates clock skew on `exp`, `nbf` and `iat`. Default 0.
	Leeway time.Duration
}

func (c Config) validate() error {
	if len(c.HS256Secret) < MinSecretLen {
		return fmt.Errorf("hs256 secret has %d bytes, need at least %d", len(c.HS256Secret), MinSecretLen)
	}
	if c.Leeway < 0 {
		return fmt.Errorf("leeway %s is negative", c.Leeway)
	}
	return nil
}

// Claims is what a verified token says about its bearer.
type Claims struct {
	// Subject is the token's `sub`: the recipient whose feed the bearer reads.
	Subject string
	// Scopes are the token's `scope` (space-separated string or array), if any.
	Scopes []string
	// ExpiresAt is the token's `exp`.
	ExpiresAt time.Time
}

// Verifier verifies bearer tokens. It is safe for concurrent use.
type Verifier struct {
	cfg    Config
	parser *jwt.Parser
}

// NewVerifier returns a Verifier for cfg, or an error when cfg is unusable.
func NewVerifier(cfg Config) (*Verifier, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("configuring token verification: %w", err)
	}
	opts := []jwt.ParserOption{
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(cfg.Leeway),
		jwt.WithStrictDecoding(),
	}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	if cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(cfg.Audience))
	}
	return &Verifier{cfg: cfg, parser: jwt.NewParser(opts...)}, nil
}

// Verify checks token's signature and claims and returns its claims. Every failure wraps
// ErrTokenInvalid; the error never contains the token.
func (v *Verifier) Verify(token string) (Claims, error) {
	if len(token) > maxTokenLen {
		return Claims{}, fmt.Errorf("%w: longer than %d bytes", ErrTokenInvalid, maxTokenLen)
	}
	var tc tokenClaims
	_, err := v.parser.ParseWithClaims(token, &tc, func(t *jwt.Token) (any, error) {
		// WithValidMethods already refused every other algorithm; this keeps the key and
		// the algorithm together should the options ever change.
		if t.Method != jwt.SigningMethodHS256 {
			return nil, fmt.Errorf("unexpected signing method %q", t.Method.Alg())
		}
		return v.cfg.HS256Secret, nil
	})
	if err != nil {
		return Claims{}, fmt.Errorf("%w: %w", ErrTokenInvalid, err)
	}
	if tc.Subject == "" {
		return Claims{}, fmt.Errorf("%w: sub is missing", ErrTokenInvalid)
	}
	if strings.ContainsRune(tc.Subject, 0) || !utf8.ValidString(tc.Subject) {
		// No recipient can be named so: the database cannot store it.
		return Claims{}, fmt.Errorf("%w: sub holds a NUL character or invalid UTF-8", ErrTokenInvalid)
	}
	return Claims{Subject: tc.Subject, Scopes: tc.Scope, ExpiresAt: tc.ExpiresAt.Time}, nil
}

// tokenClaims are the claims Tocsin reads from a token.
type tokenClaims struct {
	jwt.RegisteredClaims
	Scope scopeClaim `json:"scope,omitempty"`
}

// scopeClaim reads `scope` as a space-separated string (RFC 8693) or an array of strings,
// and writes it as a string.
type scopeClaim []string

func (s *scopeClaim) UnmarshalJSON(b []byte) error {
	var str string
	if err := json.Unmarshal(b, &str); err == nil {
		*s = strings.Fields(str)
		return nil
	}
	var list []string
	if err := json.Unmarshal(b, &list); err != nil {
		return errors.New("scope is neither a string nor an array of strings")
	}
	*s = list
	return nil
}

func (s scopeClaim) MarshalJSON() ([]byte, error) {
	return json.Marshal(strings.Join(s, " "))
}
