package debezium_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// TestSASLAndTLS consumes from brokers that demand SASL (SCRAM-SHA-256, SCRAM-SHA-512,
// PLAIN), over TLS checked against a CA file, as TOCSIN_KAFKA_* configure it.
func TestSASLAndTLS(t *testing.T) {
	t.Parallel()
	caFile, serverTLS := testCA(t)
	tests := []struct {
		name, mechanism, kfakeMethod string
		tls                          bool
		sasl                         kgo.Opt
	}{
		{"scram-sha-256", "scram-sha-256", "SCRAM-SHA-256", false, kgo.SASL(scram.Auth{User: "tocsin", Pass: "s3cret"}.AsSha256Mechanism())},
		{"scram-sha-512 over TLS", "scram-sha-512", "SCRAM-SHA-512", true, kgo.SASL(scram.Auth{User: "tocsin", Pass: "s3cret"}.AsSha512Mechanism())},
		{"plain over TLS", "plain", "PLAIN", true, kgo.SASL(plain.Auth{User: "tocsin", Pass: "s3cret"}.AsMechanism())},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			kopts := []kfake.Opt{kfake.EnableSASL(), kfake.Superuser(tt.kfakeMethod, "tocsin", "s3cret")}
			popts := []kgo.Opt{tt.sasl}
			if tt.tls {
				kopts = append(kopts, kfake.TLS(serverTLS))
				pool := x509.NewCertPool()
				pem, err := os.ReadFile(caFile)
				require.NoError(t, err)
				pool.AppendCertsFromPEM(pem)
				popts = append(popts, kgo.DialTLSConfig(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}))
			}
			b := setupWith(t, 1, routesYAML, kopts, popts)
			cfg := b.config()
			cfg.Kafka.SASLMechanism, cfg.Kafka.SASLUser, cfg.Kafka.SASLPassword = tt.mechanism, "tocsin", "s3cret"
			if tt.tls {
				cfg.Kafka.TLS, cfg.Kafka.CAFile = true, caFile
			}
			b.start(t, cfg)
			b.produce(t, change{op: "c", after: item(1, "alice", 1, "open", 0, "x"), id: 1, commit: 1, lsn: 2}.record(true))
			eventually(t, 20*time.Second, "the insert in the feed", func() bool {
				return b.count(t, `SELECT count(*) FROM tocsin.feed`) == 2
			})

		})
	}
}

// testCA writes a CA certificate to a file and returns it with a server TLS config for
// 127.0.0.1 signed by it.
func testCA(t *testing.T) (string, *tls.Config) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	ca := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	require.NoError(t, err)
	caCert, err := x509.ParseCertificate(caDER)
	require.NoError(t, err)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	leaf := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "kafka"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage: x509.KeyUsageDigitalSignature}
	leafDER, err := x509.CreateCertificate(rand.Reader, leaf, caCert, &key.PublicKey, caKey)
	require.NoError(t, err)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	require.NoError(t, os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o600))
	return caFile, &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{leafDER}, PrivateKey: key}},
		MinVersion: tls.VersionTLS12}
}
