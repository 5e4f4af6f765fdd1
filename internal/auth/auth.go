// Package auth verifies and mints the bearer JWTs that identify a recipient.
//
// The signing algorithm is pinned by configuration and never taken from the token. A
// Verifier built from an HS256 secret (development) accepts HS256 and nothing else (not
// "none", not HS384/HS512, not RS256 with the secret posing as a public key). A Verifier
// built from a JWKS URL (an identity provider such as Keycloak) accepts the configured
// asymmetric algorithms only (RS256 by default), with the provider's public keys: a token
// whose alg is not in the list is refused before any key is looked at, even when a key of
// the set would verify it. Keys are fetched in the background and refreshed every
// JWKSRefreshInterval; a token naming an unknown `kid` triggers a refresh, rate-limited,
// that never holds a request for more than UnknownKIDWait. Every token must carry `exp`
// and a non-empty `sub`, the recipient; `iss` and `aud` are checked when configured.
//
// Tokens are credentials: nothing in this package logs one or puts one in an error.
package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/MicahParks/jwkset"
	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/time/rate"
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

// Defaults of Config.
const (
	// DefaultAlgorithm is the algorithm a JWKS Verifier accepts when none is configured.
	DefaultAlgorithm = "RS256"
	// DefaultJWKSRefreshInterval is how often the key set is fetched in the background.
	DefaultJWKSRefreshInterval = 5 * time.Minute
	// DefaultUnknownKIDInterval is the least time between two refreshes caused by unknown kids.
	DefaultUnknownKIDInterval = 10 * time.Second
	// UnknownKIDWait is the longest a request waits for a refresh caused by its unknown kid.
	UnknownKIDWait = time.Second
	// jwksHTTPTimeout bounds a background fetch of the key set.
	jwksHTTPTimeout = 10 * time.Second
)

// JWKSAlgorithms are the algorithms a JWKS Verifier may be configured to accept.
var JWKSAlgorithms = []string{"RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA"}

// Config configures token verification and minting.
type Config struct {
	// HS256Secret is the shared HMAC secret, at least MinSecretLen bytes, for development.
	// Exactly one of HS256Secret and JWKSURL is required (Mint needs the secret).
	HS256Secret []byte
	// JWKSURL is an identity provider's JSON Web Key Set; tokens are verified with its keys.
	JWKSURL string
	// Algorithms are the algorithms accepted with JWKSURL, among JWKSAlgorithms. Default
	// [DefaultAlgorithm].
	Algorithms []string
	// JWKSRefreshInterval is how often the key set is fetched in the background. Default
	// DefaultJWKSRefreshInterval.
	JWKSRefreshInterval time.Duration
	// UnknownKIDInterval is the least time between refreshes caused by unknown kids.
	// Default DefaultUnknownKIDInterval.
	UnknownKIDInterval time.Duration
	// HTTPClient fetches the key set. Default: a client of its own.
	HTTPClient *http.Client
	// Logger receives failed key-set fetches. Default slog.Default().
	Logger *slog.Logger
	// Issuer, when not empty, must equal the token's `iss` (and is written by Mint).
	Issuer string
	// Audience, when not empty, must be among the token's `aud` (and is written by Mint).
	Audience string
	// Leeway tolerates clock skew on `exp`, `nbf` and `iat`. Default 0.
	Leeway time.Duration
}

func (c Config) validate() error {
	switch {
	case c.JWKSURL != "" && len(c.HS256Secret) > 0:
		return errors.New("both an hs256 secret and a jwks url are set: use the secret for development, the jwks url otherwise")
	case c.JWKSURL != "":
		u, err := url.Parse(c.JWKSURL)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return fmt.Errorf("jwks url %q is not an http(s) URL", c.JWKSURL)
		}
		for _, a := range c.Algorithms {
			if !slices.Contains(JWKSAlgorithms, a) {
				return fmt.Errorf("algorithm %q is not one of %s", a, strings.Join(JWKSAlgorithms, ", "))
			}
		}
	case len(c.HS256Secret) < MinSecretLen:
		return fmt.Errorf("hs256 secret has %d bytes, need at least %d", len(c.HS256Secret), MinSecretLen)
	case len(c.Algorithms) > 0 && !slices.Equal(c.Algorithms, []string{"HS256"}):
		return fmt.Errorf("algorithms %s need a jwks url; a secret verifies HS256 only", strings.Join(c.Algorithms, ", "))
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

// Verifier verifies bearer tokens. It is safe for concurrent use. Close it to stop the
// background refresh of a key set.
type Verifier struct {
	cfg     Config
	parser  *jwt.Parser
	keys    keyfunc.Keyfunc // nil with an HS256 secret
	stop    context.CancelFunc
	keyFunc func(ctx context.Context) jwt.Keyfunc
}

// NewVerifier returns a Verifier for cfg, or an error when cfg is unusable. With a JWKS
// URL it starts fetching the key set in the background and returns at once, even when the
// URL cannot be reached: tokens are refused and Ready fails until a key set arrives.
func NewVerifier(cfg Config) (*Verifier, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("configuring token verification: %w", err)
	}
	methods := []string{jwt.SigningMethodHS256.Alg()}
	if cfg.JWKSURL != "" {
		methods = cfg.Algorithms
		if len(methods) == 0 {
			methods = []string{DefaultAlgorithm}
		}
	}
	opts := []jwt.ParserOption{
		jwt.WithValidMethods(methods),
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
	v := &Verifier{cfg: cfg, parser: jwt.NewParser(opts...), stop: func() {}}
	if cfg.JWKSURL == "" {
		v.keyFunc = func(context.Context) jwt.Keyfunc {
			return func(t *jwt.Token) (any, error) {
				// WithValidMethods already refused every other algorithm; this keeps the key
				// and the algorithm together should the options ever change.
				if t.Method != jwt.SigningMethodHS256 {
					return nil, fmt.Errorf("unexpected signing method %q", t.Method.Alg())
				}
				return cfg.HS256Secret, nil
			}
		}
		return v, nil
	}
	if err := v.startJWKS(); err != nil {
		return nil, err
	}
	return v, nil
}

func (v *Verifier) startJWKS() error {
	cfg := v.cfg
	refresh, unknown := cfg.JWKSRefreshInterval, cfg.UnknownKIDInterval
	if refresh <= 0 {
		refresh = DefaultJWKSRefreshInterval
	}
	if unknown <= 0 {
		unknown = DefaultUnknownKIDInterval
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.Default()
	}
	ctx, stop := context.WithCancel(context.Background())
	noErrorFirst := true
	storage, err := keyfunc.NewDefaultOverrideCtx(ctx, []string{cfg.JWKSURL}, keyfunc.Override{
		Client:                    cfg.HTTPClient,
		HTTPTimeout:               jwksHTTPTimeout,
		NoErrorReturnFirstHTTPReq: &noErrorFirst,
		RateLimitWaitMax:          UnknownKIDWait,
		RefreshInterval:           refresh,
		RefreshUnknownKID:         rate.NewLimiter(rate.Every(unknown), 1),
		RefreshErrorHandlerFunc: func(u string) func(context.Context, error) {
			return func(ctx context.Context, err error) {
				logger.WarnContext(ctx, "fetching the JWKS failed", slog.String("url", u), slog.Any("error", err))
			}
		},
	})
	if err != nil {
		stop()
		return fmt.Errorf("configuring the JWKS %q: %w", cfg.JWKSURL, err)
	}
	// Signing keys only (or keys that do not say): an identity provider's encryption key
	// never verifies a token.
	keys, err := keyfunc.New(keyfunc.Options{Ctx: ctx, Storage: storage.Storage(), UseWhitelist: []jwkset.USE{jwkset.UseSig, ""}})
	if err != nil {
		stop()
		return fmt.Errorf("configuring the JWKS %q: %w", cfg.JWKSURL, err)
	}
	v.keys, v.stop = keys, stop
	v.keyFunc = keys.KeyfuncCtx
	return nil
}

// Close stops the background refresh of the key set.
func (v *Verifier) Close() { v.stop() }

// Ready returns nil once the Verifier can verify tokens: always with a secret; with a
// JWKS URL, once a key set holding at least one key was fetched. While none was, each
// call asks for a refresh (rate-limited like an unknown kid's).
func (v *Verifier) Ready(ctx context.Context) error {
	if v == nil || v.keys == nil {
		return nil
	}
	all, err := v.keys.Storage().KeyReadAll(ctx)
	if err == nil && len(all) > 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, UnknownKIDWait)
	defer cancel()
	_, _ = v.keys.Storage().KeyRead(ctx, "tocsin-readiness") // a refresh, when the limiter allows
	if all, err = v.keys.Storage().KeyReadAll(ctx); err == nil && len(all) > 0 {
		return nil
	}
	return fmt.Errorf("no key set fetched yet from the JWKS %q", v.cfg.JWKSURL)
}

// Verify checks token's signature and claims and returns its claims. Every failure wraps
// ErrTokenInvalid; the error never contains the token. With a JWKS, a token naming an
// unknown kid may wait up to UnknownKIDWait for a refresh of the key set.
func (v *Verifier) Verify(token string) (Claims, error) {
	if len(token) > maxTokenLen {
		return Claims{}, fmt.Errorf("%w: longer than %d bytes", ErrTokenInvalid, maxTokenLen)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*UnknownKIDWait)
	defer cancel()
	var tc tokenClaims
	_, err := v.parser.ParseWithClaims(token, &tc, v.keyFunc(ctx))
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
