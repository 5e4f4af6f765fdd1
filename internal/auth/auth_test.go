package auth

import (
	"crypto/rand"
	"crypto/rsa"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/require"
)

var testSecret = []byte("0123456789abcdef0123456789abcdef")

type testBundle struct {
	cfg      Config
	verifier *Verifier
}

func setup(t *testing.T, cfg Config) *testBundle {
	t.Helper()
	if cfg.HS256Secret == nil {
		cfg.HS256Secret = testSecret
	}
	v, err := NewVerifier(cfg)
	require.NoError(t, err)
	return &testBundle{cfg: cfg, verifier: v}
}

// sign signs claims with method and key, bypassing Mint to build hostile tokens.
func sign(t *testing.T, method jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(method, claims).SignedString(key)
	require.NoError(t, err)
	return s
}

func validClaims() jwt.MapClaims {
	return jwt.MapClaims{"sub": "user:1", "exp": time.Now().Add(time.Hour).Unix()}
}

func requireInvalid(t *testing.T, v *Verifier, token, reason string) {
	t.Helper()
	_, err := v.Verify(token)
	require.ErrorIs(t, err, ErrTokenInvalid)
	require.Contains(t, err.Error(), reason)
	if token != "" {
		require.NotContains(t, err.Error(), token, "an error must never carry the token")
	}
}

func TestVerify(t *testing.T) {
	t.Parallel()

	t.Run("Valid", func(t *testing.T) {
		t.Parallel()
		b := setup(t, Config{Issuer: "https://idp.example", Audience: "tocsin"})
		token, err := Mint(b.cfg, "user:1", time.Hour, "feed:read inbox:write")
		require.NoError(t, err)

		claims, err := b.verifier.Verify(token)
		require.NoError(t, err)
		require.Equal(t, "user:1", claims.Subject)
		require.Equal(t, []string{"feed:read", "inbox:write"}, claims.Scopes)
		require.WithinDuration(t, time.Now().Add(time.Hour), claims.ExpiresAt, 5*time.Second)
	})

	t.Run("ScopeArray", func(t *testing.T) {
		t.Parallel()
		b := setup(t, Config{})
		c := validClaims()
		c["scope"] = []string{"a", "b"}
		claims, err := b.verifier.Verify(sign(t, jwt.SigningMethodHS256, testSecret, c))
		require.NoError(t, err)
		require.Equal(t, []string{"a", "b"}, claims.Scopes)
	})

	t.Run("Expired", func(t *testing.T) {
		t.Parallel()
		b := setup(t, Config{})
		c := validClaims()
		c["exp"] = time.Now().Add(-time.Minute).Unix()
		requireInvalid(t, b.verifier, sign(t, jwt.SigningMethodHS256, testSecret, c), "expired")
	})

	t.Run("ExpiredWithinLeeway", func(t *testing.T) {
		t.Parallel()
		b := setup(t, Config{Leeway: time.Minute})
		c := validClaims()
		c["exp"] = time.Now().Add(-10 * time.Second).Unix()
		_, err := b.verifier.Verify(sign(t, jwt.SigningMethodHS256, testSecret, c))
		require.NoError(t, err)
	})

	t.Run("MissingExp", func(t *testing.T) {
		t.Parallel()
		b := setup(t, Config{})
		c := validClaims()
		delete(c, "exp")
		requireInvalid(t, b.verifier, sign(t, jwt.SigningMethodHS256, testSecret, c), "exp")
	})

	t.Run("BadSignature", func(t *testing.T) {
		t.Parallel()
		b := setup(t, Config{})
		other := []byte("another secret, just as long as the first")
		requireInvalid(t, b.verifier, sign(t, jwt.SigningMethodHS256, other, validClaims()), "signature")
	})

	t.Run("AlgNone", func(t *testing.T) {
		t.Parallel()
		b := setup(t, Config{})
		token := sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, validClaims())
		requireInvalid(t, b.verifier, token, "signing method none is invalid")
	})

	t.Run("OtherAlgorithms", func(t *testing.T) {
		t.Parallel()
		b := setup(t, Config{})
		rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
		require.NoError(t, err)
		for _, tt := range []struct {
			method jwt.SigningMethod
			key    any
		}{
			{jwt.SigningMethodRS256, rsaKey},
			{jwt.SigningMethodHS384, testSecret},
			{jwt.SigningMethodHS512, testSecret},
		} {
			token := sign(t, tt.method, tt.key, validClaims())
			requireInvalid(t, b.verifier, token, "signing method "+tt.method.Alg()+" is invalid")
		}
	})

	t.Run("WrongIssuer", func(t *testing.T) {
		t.Parallel()
		b := setup(t, Config{Issuer: "https://idp.example"})
		c := validClaims()
		c["iss"] = "https://evil.example"
		requireInvalid(t, b.verifier, sign(t, jwt.SigningMethodHS256, testSecret, c), "iss")
		requireInvalid(t, b.verifier, sign(t, jwt.SigningMethodHS256, testSecret, validClaims()), "iss")
	})

	t.Run("WrongAudience", func(t *testing.T) {
		t.Parallel()
		b := setup(t, Config{Audience: "tocsin"})
		c := validClaims()
		c["aud"] = []string{"someone-else"}
		requireInvalid(t, b.verifier, sign(t, jwt.SigningMethodHS256, testSecret, c), "aud")
		requireInvalid(t, b.verifier, sign(t, jwt.SigningMethodHS256, testSecret, validClaims()), "aud")
	})

	t.Run("IssuerAndAudienceIgnoredWhenNotConfigured", func(t *testing.T) {
		t.Parallel()
		b := setup(t, Config{})
		c := validClaims()
		c["iss"], c["aud"] = "anyone", "anything"
		_, err := b.verifier.Verify(sign(t, jwt.SigningMethodHS256, testSecret, c))
		require.NoError(t, err)
	})

	t.Run("MissingSub", func(t *testing.T) {
		t.Parallel()
		b := setup(t, Config{})
		c := validClaims()
		delete(c, "sub")
		requireInvalid(t, b.verifier, sign(t, jwt.SigningMethodHS256, testSecret, c), "sub is missing")
		c["sub"] = ""
		requireInvalid(t, b.verifier, sign(t, jwt.SigningMethodHS256, testSecret, c), "sub is missing")
	})

	t.Run("SubWithNUL", func(t *testing.T) {
		t.Parallel()
		b := setup(t, Config{})
		c := validClaims()
		c["sub"] = "user:\x001"
		requireInvalid(t, b.verifier, sign(t, jwt.SigningMethodHS256, testSecret, c), "NUL")
	})

	t.Run("Garbage", func(t *testing.T) {
		t.Parallel()
		b := setup(t, Config{})
		for _, token := range []string{"", "garbage", "a.b.c", "eyJhbGciOiJIUzI1NiJ9..", strings.Repeat("a", maxTokenLen+1)} {
			_, err := b.verifier.Verify(token)
			require.ErrorIs(t, err, ErrTokenInvalid, "token %.20q", token)
		}
	})
}

func TestNewVerifierRefusesShortSecret(t *testing.T) {
	t.Parallel()

	_, err := NewVerifier(Config{HS256Secret: []byte("short")})
	require.ErrorContains(t, err, "at least 32")
	_, err = NewVerifier(Config{HS256Secret: testSecret, Leeway: -time.Second})
	require.ErrorContains(t, err, "negative")
}

func TestMint(t *testing.T) {
	t.Parallel()

	cfg := Config{HS256Secret: testSecret}
	_, err := Mint(cfg, "", time.Hour, "")
	require.ErrorContains(t, err, "sub is empty")
	_, err = Mint(cfg, "user:1", 0, "")
	require.ErrorContains(t, err, "ttl")
	_, err = Mint(Config{}, "user:1", time.Hour, "")
	require.ErrorContains(t, err, "secret")

	token, err := Mint(cfg, "user:1", time.Hour, "")
	require.NoError(t, err)
	parsed, _, err := jwt.NewParser().ParseUnverified(token, jwt.MapClaims{})
	require.NoError(t, err)
	require.Equal(t, "HS256", parsed.Header["alg"])
	require.NotContains(t, parsed.Claims, "scope", "no scope claim when none is asked for")
}
