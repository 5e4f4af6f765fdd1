package auth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/require"
)

// signingKey is a private key the test signs with and whose public half the JWKS serves.
type signingKey struct {
	kid    string
	alg    jwkset.ALG
	use    jwkset.USE
	signer crypto.Signer
}

// idp serves a JSON Web Key Set over HTTP, as an identity provider does; its keys can be
// replaced (rotation) and it can be made to fail.
type idp struct {
	srv     *httptest.Server
	fetches atomic.Int64

	mu      sync.Mutex
	keys    []signingKey
	failing bool
}

func newIDP(t *testing.T, keys ...signingKey) *idp {
	t.Helper()
	p := &idp{keys: keys}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.fetches.Add(1)
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.failing {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		set := struct {
			Keys []jwkset.JWKMarshal `json:"keys"`
		}{}
		for _, k := range p.keys {
			jwk, err := jwkset.NewJWKFromKey(k.signer.Public(), jwkset.JWKOptions{
				Metadata: jwkset.JWKMetadataOptions{KID: k.kid, ALG: k.alg, USE: k.use}})
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			set.Keys = append(set.Keys, jwk.Marshal())
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(set)
	}))
	t.Cleanup(p.srv.Close)
	return p
}

func (p *idp) set(keys ...signingKey) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.keys = keys
}

func (p *idp) fail(failing bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.failing = failing
}

func rsaKey(t *testing.T, kid string) signingKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	return signingKey{kid: kid, alg: jwkset.AlgRS256, use: jwkset.UseSig, signer: k}
}

// token signs claims with k under method, naming k's kid.
func (k signingKey) token(t *testing.T, method jwt.SigningMethod, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, claims)
	tok.Header["kid"] = k.kid
	s, err := tok.SignedString(k.signer)
	require.NoError(t, err)
	return s
}

func jwksVerifier(t *testing.T, p *idp, cfg Config) *Verifier {
	t.Helper()
	cfg.JWKSURL = p.srv.URL
	v, err := NewVerifier(cfg)
	require.NoError(t, err)
	t.Cleanup(v.Close)
	return v
}

func TestJWKSVerifiesEachConfiguredAlgorithm(t *testing.T) {
	t.Parallel()
	ec256, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	ec384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	require.NoError(t, err)
	_, ed, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	rs := rsaKey(t, "rs")
	ps := rsaKey(t, "ps")
	ps.alg = jwkset.AlgPS256
	keys := map[jwt.SigningMethod]signingKey{
		jwt.SigningMethodRS256: rs,
		jwt.SigningMethodPS256: ps,
		jwt.SigningMethodES256: {kid: "es256", alg: jwkset.AlgES256, use: jwkset.UseSig, signer: ec256},
		jwt.SigningMethodES384: {kid: "es384", alg: jwkset.AlgES384, use: jwkset.UseSig, signer: ec384},
		jwt.SigningMethodEdDSA: {kid: "ed", alg: jwkset.AlgEdDSA, signer: ed}, // no "use": allowed
	}
	var all []signingKey
	for _, k := range keys {
		all = append(all, k)
	}
	p := newIDP(t, all...)
	v := jwksVerifier(t, p, Config{Algorithms: []string{"RS256", "PS256", "ES256", "ES384", "EdDSA"}})
	require.NoError(t, v.Ready(t.Context()))
	for method, k := range keys {
		c, err := v.Verify(k.token(t, method, validClaims()))
		require.NoError(t, err, method.Alg())
		require.Equal(t, "user:1", c.Subject)
	}
	// Without a kid, every key of the set is tried.
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, validClaims())
	s, err := tok.SignedString(rs.signer)
	require.NoError(t, err)
	_, err = v.Verify(s)
	require.NoError(t, err)
}

// Algorithm confusion: an HS256 token whose secret is the provider's public key, an
// algorithm outside the list even though the key would verify it, alg none, and a token
// signed with the provider's encryption key are all refused.
func TestJWKSRefusesAlgorithmConfusion(t *testing.T) {
	t.Parallel()
	sig := rsaKey(t, "sig")
	enc := rsaKey(t, "enc")
	enc.alg, enc.use = jwkset.AlgRSAOAEP, jwkset.UseEnc
	p := newIDP(t, sig, enc)
	v := jwksVerifier(t, p, Config{}) // RS256 only
	_, err := v.Verify(sig.token(t, jwt.SigningMethodRS256, validClaims()))
	require.NoError(t, err)

	der, err := x509.MarshalPKIXPublicKey(sig.signer.Public())
	require.NoError(t, err)
	for _, secret := range [][]byte{der, sig.signer.Public().(*rsa.PublicKey).N.Bytes()} {
		hs := jwt.NewWithClaims(jwt.SigningMethodHS256, validClaims())
		hs.Header["kid"] = "sig"
		s, err := hs.SignedString(secret)
		require.NoError(t, err)
		requireInvalid(t, v, s, "signing method HS256 is invalid")
	}
	requireInvalid(t, v, sig.token(t, jwt.SigningMethodRS384, validClaims()), "signing method RS384 is invalid")
	requireInvalid(t, v, sig.token(t, jwt.SigningMethodPS256, validClaims()), "signing method PS256 is invalid")
	none := jwt.NewWithClaims(jwt.SigningMethodNone, validClaims())
	s, err := none.SignedString(jwt.UnsafeAllowNoneSignatureType)
	require.NoError(t, err)
	requireInvalid(t, v, s, "invalid")
	enc.alg = jwkset.AlgRS256 // even with an alg that matches
	requireInvalid(t, v, enc.token(t, jwt.SigningMethodRS256, validClaims()), "invalid")

	_, err = NewVerifier(Config{JWKSURL: p.srv.URL, Algorithms: []string{"HS256"}})
	require.ErrorContains(t, err, `algorithm "HS256" is not one of`)
	_, err = NewVerifier(Config{JWKSURL: p.srv.URL, HS256Secret: testSecret})
	require.ErrorContains(t, err, "both")
	_, err = NewVerifier(Config{HS256Secret: testSecret, Algorithms: []string{"RS256"}})
	require.ErrorContains(t, err, "need a jwks url")
}

// The provider rotates its key: a token with the new kid triggers a refresh and is
// accepted without a restart; tokens naming unknown kids refresh at most once per
// UnknownKIDInterval, however many arrive.
func TestJWKSKeyRotationWithoutRestart(t *testing.T) {
	t.Parallel()
	old, next := rsaKey(t, "2026-old"), rsaKey(t, "2026-new")
	p := newIDP(t, old)
	v := jwksVerifier(t, p, Config{UnknownKIDInterval: time.Hour})
	require.NoError(t, v.Ready(t.Context()))
	_, err := v.Verify(old.token(t, jwt.SigningMethodRS256, validClaims()))
	require.NoError(t, err)

	p.set(old, next)
	_, err = v.Verify(next.token(t, jwt.SigningMethodRS256, validClaims()))
	require.NoError(t, err, "the unknown kid fetched the rotated set")
	_, err = v.Verify(old.token(t, jwt.SigningMethodRS256, validClaims()))
	require.NoError(t, err)

	before := p.fetches.Load()
	for i := range 50 {
		stranger := rsaKey(t, fmt.Sprintf("unknown-%d", i))
		requireInvalid(t, v, stranger.token(t, jwt.SigningMethodRS256, validClaims()), "invalid")
	}
	require.Equal(t, before, p.fetches.Load(), "the rate limit allows no further refresh within the hour")
}

// An unreachable JWKS at start does not stop the node from starting, but it is not ready
// and refuses every token until a key set arrives; then it verifies without a restart.
func TestJWKSUnreachableAtStart(t *testing.T) {
	t.Parallel()
	k := rsaKey(t, "k")
	p := newIDP(t, k)
	p.fail(true)
	v := jwksVerifier(t, p, Config{UnknownKIDInterval: 10 * time.Millisecond})
	require.ErrorContains(t, v.Ready(t.Context()), "no key set fetched yet")
	requireInvalid(t, v, k.token(t, jwt.SigningMethodRS256, validClaims()), "invalid")

	p.fail(false)
	require.Eventually(t, func() bool { return v.Ready(context.Background()) == nil }, 10*time.Second, 20*time.Millisecond)
	_, err := v.Verify(k.token(t, jwt.SigningMethodRS256, validClaims()))
	require.NoError(t, err)

	// A URL nobody listens on: still a Verifier, never ready.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	dead := "http://" + l.Addr().String() + "/jwks"
	l.Close()
	v2, err := NewVerifier(Config{JWKSURL: dead})
	require.NoError(t, err)
	defer v2.Close()
	require.Error(t, v2.Ready(t.Context()))
}

// Clock leeway: a token expired a little less than Leeway ago is still accepted.
func TestLeeway(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{Leeway: 30 * time.Second})
	c := validClaims()
	c["exp"] = time.Now().Add(-10 * time.Second).Unix()
	_, err := b.verifier.Verify(sign(t, jwt.SigningMethodHS256, testSecret, c))
	require.NoError(t, err)
	c["exp"] = time.Now().Add(-time.Minute).Unix()
	requireInvalid(t, b.verifier, sign(t, jwt.SigningMethodHS256, testSecret, c), "expired")
}
