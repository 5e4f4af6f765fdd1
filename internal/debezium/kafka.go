package debezium

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// Kafka is how to reach the Kafka cluster (TOCSIN_KAFKA_*).
type Kafka struct {
	// Brokers are the seed brokers, host:port.
	Brokers []string
	// Group is the consumer group (TOCSIN_KAFKA_GROUP, default "tocsin").
	Group string
	// InstanceID, when set, makes this node a static group member (KIP-345): restarted
	// within the session timeout, it takes its partitions back without a rebalance. It
	// must differ between the nodes of a group.
	InstanceID string
	// TLS turns TLS on. CAFile (PEM) replaces the system roots; CertFile and KeyFile (PEM)
	// are a client certificate for mutual TLS. ServerName overrides the name checked in
	// the brokers' certificates.
	TLS        bool
	CAFile     string
	CertFile   string
	KeyFile    string
	ServerName string
	// SASLMechanism is "", "plain", "scram-sha-256" or "scram-sha-512", with SASLUser and
	// SASLPassword. Use TLS with PLAIN: it sends the password as it is.
	SASLMechanism string
	SASLUser      string
	SASLPassword  string
}

// ParseBrokers splits a comma list of brokers, dropping blanks.
func ParseBrokers(s string) []string {
	var out []string
	for _, b := range strings.Split(s, ",") {
		if b = strings.TrimSpace(b); b != "" {
			out = append(out, b)
		}
	}
	return out
}

// Validate reports what is missing or inconsistent, naming the settings.
func (k *Kafka) Validate() error {
	var errs []error
	if len(k.Brokers) == 0 {
		errs = append(errs, errors.New("TOCSIN_KAFKA_BROKERS: no broker (a comma list of host:port)"))
	}
	if (k.CertFile == "") != (k.KeyFile == "") {
		errs = append(errs, errors.New("TOCSIN_KAFKA_TLS_CERT_FILE and TOCSIN_KAFKA_TLS_KEY_FILE go together"))
	}
	switch k.SASLMechanism {
	case "":
	case "plain", "scram-sha-256", "scram-sha-512":
		if k.SASLUser == "" {
			errs = append(errs, fmt.Errorf("TOCSIN_KAFKA_SASL_USER: required with SASL mechanism %q", k.SASLMechanism))
		}
	default:
		errs = append(errs, fmt.Errorf("TOCSIN_KAFKA_SASL_MECHANISM: %q is not plain, scram-sha-256 or scram-sha-512", k.SASLMechanism))
	}
	return errors.Join(errs...)
}

// clientOpts returns the connection options of k.
func (k *Kafka) clientOpts() ([]kgo.Opt, error) {
	if err := k.Validate(); err != nil {
		return nil, err
	}
	opts := []kgo.Opt{kgo.SeedBrokers(k.Brokers...)}
	if k.TLS || k.CAFile != "" || k.CertFile != "" {
		cfg, err := k.tlsConfig()
		if err != nil {
			return nil, err
		}
		opts = append(opts, kgo.DialTLSConfig(cfg))
	}
	if m := k.mechanism(); m != nil {
		opts = append(opts, kgo.SASL(m))
	}
	return opts, nil
}

func (k *Kafka) tlsConfig() (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: k.ServerName}
	if k.CAFile != "" {
		pem, err := os.ReadFile(k.CAFile)
		if err != nil {
			return nil, fmt.Errorf("TOCSIN_KAFKA_TLS_CA_FILE: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("TOCSIN_KAFKA_TLS_CA_FILE: no PEM certificate in %q", k.CAFile)
		}
	}
	if k.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(k.CertFile, k.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("TOCSIN_KAFKA_TLS_CERT_FILE and _KEY_FILE: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

func (k *Kafka) mechanism() sasl.Mechanism {
	switch k.SASLMechanism {
	case "plain":
		return plain.Auth{User: k.SASLUser, Pass: k.SASLPassword}.AsMechanism()
	case "scram-sha-256":
		return scram.Auth{User: k.SASLUser, Pass: k.SASLPassword}.AsSha256Mechanism()
	case "scram-sha-512":
		return scram.Auth{User: k.SASLUser, Pass: k.SASLPassword}.AsSha512Mechanism()
	}
	return nil
}

// kgoLogger passes the Kafka client's warnings and errors (a refused login, an unreachable
// broker) to the node's log.
type kgoLogger struct{ log *slog.Logger }

func (kgoLogger) Level() kgo.LogLevel { return kgo.LogLevelWarn }

func (l kgoLogger) Log(level kgo.LogLevel, msg string, keyvals ...any) {
	lvl := slog.LevelWarn
	if level == kgo.LogLevelError {
		lvl = slog.LevelError
	}
	l.log.Log(context.Background(), lvl, "kafka: "+msg, keyvals...)
}
