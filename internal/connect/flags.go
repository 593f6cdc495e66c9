package connect

import (
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"

	"github.com/connector-go/connector/internal/telemetry"
	"go.uber.org/zap"
)

// secretValue is a flag.Value over a string secret whose String (used for
// the default shown by -help) never reveals the value.
type secretValue string

func (s *secretValue) String() string {
	if s == nil || *s == "" {
		return ""
	}
	return redacted
}

func (s *secretValue) Set(v string) error { *s = secretValue(v); return nil }

// fromEnv remembers which settings came from the environment, so that a
// flag on the command line beats the environment also where the
// environment gave the same secret another way (CONNECTOR_NATS_PASSWORD
// against --nats-password-file) or another authentication method
// (CONNECTOR_NATS_TOKEN against --nats-user and --nats-password).
type fromEnv map[*string]bool

// envDefault sets *p from the variable name (def when unset) and notes
// when the variable gave it.
func (e fromEnv) envDefault(p *string, getenv func(string) string, name, def string) {
	*p = envOr(getenv, name, def)
	if *p != def {
		e[p] = true
	}
}

// overrideValue is a flag.Value over *p that, when the flag is given a
// value, clears the settings in beats that came from the environment.
type overrideValue struct {
	p      *string
	secret bool // -help shows a set value as "xxxxx"
	env    fromEnv
	beats  []*string
}

func (o *overrideValue) String() string {
	if o == nil || o.p == nil {
		return ""
	}
	if o.secret {
		return (*secretValue)(o.p).String()
	}
	return *o.p
}

func (o *overrideValue) Set(v string) error {
	delete(o.env, o.p)
	*o.p = v
	if v == "" {
		return nil // an empty flag unsets its setting and chooses nothing
	}
	for _, q := range o.beats {
		if o.env[q] {
			*q = ""
			delete(o.env, q)
		}
	}
	return nil
}

// authFlag is the flag of one authentication setting.
type authFlag struct {
	p           *string
	name, usage string
	secret      bool
}

// bindAuth registers the flags of authentication settings grouped by
// method: a flag of one method beats the environment's settings of the
// other methods and of its twin (the same secret as a value or a file,
// twins[p]).
func bindAuth(fs *flag.FlagSet, env fromEnv, methods [][]authFlag, twins map[*string]*string) {
	for i, m := range methods {
		var others []*string
		for j, o := range methods {
			if j != i {
				for _, f := range o {
					others = append(others, f.p)
				}
			}
		}
		for _, f := range m {
			beats := others
			if t := twins[f.p]; t != nil {
				beats = append(append([]*string(nil), others...), t)
			}
			fs.Var(&overrideValue{p: f.p, secret: f.secret, env: env, beats: beats}, f.name, f.usage)
		}
	}
}

// urlValue is a flag.Value over a URL that may carry credentials; -help
// shows it redacted.
type urlValue string

func (u *urlValue) String() string {
	if u == nil {
		return ""
	}
	return redactServers(string(*u))
}

func (u *urlValue) Set(v string) error { *u = urlValue(v); return nil }

func envOr(getenv func(string) string, name, def string) string {
	if getenv == nil {
		return def
	}
	if v := getenv(name); v != "" {
		return v
	}
	return def
}

// readSecretFile reads a mounted secret: the file's content without a
// trailing newline. The error names the file, never its content.
func readSecretFile(what, path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("%w: %s file: %v", ErrConfig, what, err)
	}
	s := strings.TrimRight(string(b), "\r\n")
	if s == "" {
		return "", fmt.Errorf("%w: %s file %s is empty", ErrConfig, what, path)
	}
	return s, nil
}

// secret returns value if set, else the content of file if set, else "".
func secret(what, value, file string) (string, error) {
	if value != "" || file == "" {
		return value, nil
	}
	return readSecretFile(what, file)
}

// tlsConfig builds a client TLS configuration from PEM files: caFile
// replaces the system roots, certFile+keyFile is the client certificate
// for mTLS. It returns nil when no file is given.
func tlsConfig(what, caFile, certFile, keyFile string) (*tls.Config, error) {
	if caFile == "" && certFile == "" && keyFile == "" {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("%w: %s CA: %v", ErrConfig, what, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%w: %s CA %s holds no PEM certificate", ErrConfig, what, caFile)
		}
		cfg.RootCAs = pool
	}
	if (certFile == "") != (keyFile == "") {
		return nil, fmt.Errorf("%w: %s client certificate and key go together (cert %q, key %q)", ErrConfig, what, certFile, keyFile)
	}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			// The error of LoadX509KeyPair describes the PEM blocks, not
			// the key material.
			return nil, fmt.Errorf("%w: %s client certificate: %v", ErrConfig, what, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// urlSecrets returns the passwords (and lone NATS tokens) embedded in a
// comma-separated list of URLs. An entry without a scheme is read as
// nats.go reads it: a nats:// URL.
func urlSecrets(list string) []string {
	var out []string
	for _, part := range strings.Split(list, ",") {
		part = strings.TrimSpace(part)
		rest := part
		if i := strings.Index(part, "://"); i >= 0 {
			rest = part[i+3:]
		}
		at := strings.LastIndex(rest, "@")
		if at < 0 {
			continue
		}
		userinfo := rest[:at]
		if j := strings.Index(userinfo, ":"); j >= 0 {
			out = append(out, userinfo[j+1:])
			if u, err := url.PathUnescape(userinfo[j+1:]); err == nil {
				out = append(out, u)
			}
		} else if !strings.HasPrefix(strings.ToLower(part), "redis") {
			out = append(out, userinfo) // a NATS token
		}
	}
	return out
}

// fileSecret re-reads a mounted secret file each time it is asked, so that
// a rotated secret is used on the next (re)connect; when the file cannot be
// read it keeps the last value read.
type fileSecret struct {
	what, file string
	log        *zap.Logger
	mu         sync.Mutex
	last       string
}

func newFileSecret(what, file, first string, log *zap.Logger) *fileSecret {
	return &fileSecret{what: what, file: file, last: first, log: log}
}

func (f *fileSecret) get() string {
	v, err := readSecretFile(f.what, f.file)
	f.mu.Lock()
	defer f.mu.Unlock()
	if err != nil {
		f.log.Warn("connect: cannot re-read a secret file; using the last value read", zap.String("file", f.file), telemetry.ErrField(err))
		return f.last
	}
	f.last = v
	return v
}
