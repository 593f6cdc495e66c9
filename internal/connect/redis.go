package connect

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"net"
	"strings"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// DefaultRedisURL is used when neither --redis nor CONNECTOR_REDIS_URL is set.
const DefaultRedisURL = "redis://127.0.0.1:6379/0"

// RedisConfig says how to reach and authenticate to Redis.
//
// URL is redis:// or rediss:// (TLS), optionally with user:password, a
// database number and go-redis query options. Redis Cluster is selected by
// a redis+cluster:// (or rediss+cluster://) scheme or by a comma-separated
// list of nodes ("redis://u:p@h1:6379,h2:6379"); it yields a
// *redis.ClusterClient.
type RedisConfig struct {
	URL                string
	Username, Password string // ACL user and password; override the URL's
	PasswordFile       string // read when Password is empty (mounted secret)

	CAFile, CertFile, KeyFile string // TLS: custom CA; client cert+key for mTLS
}

// Bind registers the Redis flags on fs with defaults from the environment:
//
//	--redis               CONNECTOR_REDIS_URL (default redis://127.0.0.1:6379/0)
//	--redis-user          CONNECTOR_REDIS_USER
//	--redis-password      CONNECTOR_REDIS_PASSWORD, or the file CONNECTOR_REDIS_PASSWORD_FILE (--redis-password-file)
//	--redis-ca            CONNECTOR_REDIS_CA
//	--redis-cert          CONNECTOR_REDIS_CERT
//	--redis-key           CONNECTOR_REDIS_KEY
//
// -help shows the URL redacted and the password as "xxxxx".
func (c *RedisConfig) Bind(fs *flag.FlagSet, getenv func(string) string) {
	c.URL = envOr(getenv, "CONNECTOR_REDIS_URL", DefaultRedisURL)
	c.Username = envOr(getenv, "CONNECTOR_REDIS_USER", "")
	env := fromEnv{}
	env.envDefault(&c.Password, getenv, "CONNECTOR_REDIS_PASSWORD", "")
	env.envDefault(&c.PasswordFile, getenv, "CONNECTOR_REDIS_PASSWORD_FILE", "")
	c.CAFile = envOr(getenv, "CONNECTOR_REDIS_CA", "")
	c.CertFile = envOr(getenv, "CONNECTOR_REDIS_CERT", "")
	c.KeyFile = envOr(getenv, "CONNECTOR_REDIS_KEY", "")

	fs.Var((*urlValue)(&c.URL), "redis", "Redis URL: redis:// or rediss:// (TLS); redis+cluster:// or a comma-separated node list for Redis Cluster (env CONNECTOR_REDIS_URL)")
	fs.StringVar(&c.Username, "redis-user", c.Username, "Redis ACL user (env CONNECTOR_REDIS_USER)")
	// --redis-password-file beats CONNECTOR_REDIS_PASSWORD, and
	// --redis-password CONNECTOR_REDIS_PASSWORD_FILE.
	bindAuth(fs, env, [][]authFlag{{
		{&c.Password, "redis-password", "Redis password (env CONNECTOR_REDIS_PASSWORD; prefer --redis-password-file)", true},
		{&c.PasswordFile, "redis-password-file", "file holding the Redis password (env CONNECTOR_REDIS_PASSWORD_FILE)", false},
	}}, map[*string]*string{&c.Password: &c.PasswordFile, &c.PasswordFile: &c.Password})
	fs.StringVar(&c.CAFile, "redis-ca", c.CAFile, "PEM file of the CA that signed the Redis server certificate (env CONNECTOR_REDIS_CA)")
	fs.StringVar(&c.CertFile, "redis-cert", c.CertFile, "PEM client certificate for Redis mTLS (env CONNECTOR_REDIS_CERT)")
	fs.StringVar(&c.KeyFile, "redis-key", c.KeyFile, "PEM client key for Redis mTLS (env CONNECTOR_REDIS_KEY)")
}

// String describes the configuration for logs, with every secret redacted.
func (c RedisConfig) String() string {
	var b strings.Builder
	b.WriteString(Redact(c.URL))
	if c.Username != "" {
		fmt.Fprintf(&b, " user=%s", c.Username)
	}
	if c.Password != "" || c.PasswordFile != "" {
		b.WriteString(" password=" + redacted)
	}
	if c.CAFile != "" {
		fmt.Fprintf(&b, " ca=%s", c.CAFile)
	}
	if c.CertFile != "" {
		fmt.Fprintf(&b, " cert=%s", c.CertFile)
	}
	return b.String()
}

// GoString keeps %#v from printing secrets.
func (c RedisConfig) GoString() string { return "connect.RedisConfig{" + c.String() + "}" }

// clusterURL recognizes the Redis Cluster forms and returns them as one
// go-redis cluster URL (first node as host, the others as addr= params).
func clusterURL(raw string) (string, bool) {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return "", false
	}
	cluster := false
	switch strings.ToLower(scheme) {
	case "redis+cluster":
		scheme, cluster = "redis", true
	case "rediss+cluster":
		scheme, cluster = "rediss", true
	}
	if !cluster && !strings.Contains(rest, ",") {
		return "", false
	}
	// Split off the query and path of the whole URL.
	query := ""
	if i := strings.Index(rest, "?"); i >= 0 {
		rest, query = rest[:i], rest[i+1:]
	}
	userinfo := ""
	var hosts []string
	for i, h := range strings.Split(rest, ",") {
		h = strings.TrimSpace(h)
		if _, after, ok := strings.Cut(h, "://"); ok {
			h = after
		}
		if at := strings.LastIndex(h, "@"); at >= 0 {
			if i == 0 {
				userinfo = h[:at+1]
			}
			h = h[at+1:]
		}
		h, _, _ = strings.Cut(h, "/")
		if h != "" {
			hosts = append(hosts, h)
		}
	}
	if len(hosts) == 0 {
		return "", false
	}
	u := scheme + "://" + userinfo + hosts[0]
	var params []string
	if query != "" {
		params = append(params, query)
	}
	for _, h := range hosts[1:] {
		params = append(params, "addr="+h)
	}
	if len(params) > 0 {
		u += "?" + strings.Join(params, "&")
	}
	return u, true
}

// ConnectRedis opens a client for c and pings it. It returns a
// *redis.Client, or a *redis.ClusterClient for the cluster forms of URL.
// The returned error never contains a secret. A failed re-read of
// PasswordFile (on a new connection) is logged to log; nil discards it.
func ConnectRedis(ctx context.Context, c RedisConfig, log *zap.Logger) (redis.UniversalClient, error) {
	if log == nil {
		log = zap.NewNop()
	}
	password, err := secret("Redis password", c.Password, c.PasswordFile)
	if err != nil {
		return nil, err
	}
	raw := c.URL
	if raw == "" {
		raw = DefaultRedisURL
	}
	secrets := append([]string{password}, urlSecrets(raw)...)
	fail := func(err error) error {
		return wrapErr("connect: redis "+Redact(raw), err, secrets...)
	}
	tc, err := tlsConfig("Redis", c.CAFile, c.CertFile, c.KeyFile)
	if err != nil {
		return nil, err
	}
	applyTLS := func(cur *tls.Config, host string) *tls.Config {
		if tc == nil {
			return cur
		}
		out := tc.Clone()
		if cur != nil && cur.ServerName != "" {
			out.ServerName = cur.ServerName
		} else if h, _, err := net.SplitHostPort(host); err == nil {
			out.ServerName = h
		}
		return out
	}

	var client redis.UniversalClient
	if cu, ok := clusterURL(raw); ok {
		opt, err := redis.ParseClusterURL(cu)
		if err != nil {
			return nil, fail(fmt.Errorf("%w: %s", ErrConfig, scrub(err.Error(), secrets...)))
		}
		if c.Username != "" {
			opt.Username = c.Username
		}
		if password != "" {
			opt.Password = password
		}
		opt.CredentialsProvider = c.credentials(opt.Username, password, log)
		if len(opt.Addrs) > 0 {
			opt.TLSConfig = applyTLS(opt.TLSConfig, opt.Addrs[0])
		}
		if opt.TLSConfig != nil {
			// go-redis hands opt.TLSConfig, as is, to the client of every
			// node, including those CLUSTER SLOTS reveals later.
			opt.NewClient = func(o *redis.Options) *redis.Client {
				o.TLSConfig = nodeTLS(o.TLSConfig, o.Addr)
				return redis.NewClient(o)
			}
		}
		client = redis.NewClusterClient(opt)
	} else {
		opt, err := redis.ParseURL(raw)
		if err != nil {
			return nil, fail(fmt.Errorf("%w: %s", ErrConfig, scrub(err.Error(), secrets...)))
		}
		if c.Username != "" {
			opt.Username = c.Username
		}
		if password != "" {
			opt.Password = password
		}
		opt.CredentialsProvider = c.credentials(opt.Username, password, log)
		opt.TLSConfig = applyTLS(opt.TLSConfig, opt.Addr)
		client = redis.NewClient(opt)
	}
	if err := client.Ping(ctx).Err(); err != nil {
		_ = client.Close()
		return nil, fail(err)
	}
	return client, nil
}

// nodeTLS returns cfg for the cluster node at addr (the address the
// cluster announces for it): the node's certificate must be valid for
// that host (certificates that each name their own node), or else for
// cfg.ServerName, the first host of the URL (a name all nodes'
// certificates share: a Service's name or a wildcard). A node whose host
// is that name is checked by crypto/tls as usual.
func nodeTLS(cfg *tls.Config, addr string) *tls.Config {
	host, _, err := net.SplitHostPort(addr)
	if cfg == nil || err != nil || host == "" {
		return cfg
	}
	shared := cfg.ServerName
	out := cfg.Clone()
	out.ServerName = host
	if cfg.InsecureSkipVerify || shared == "" || strings.EqualFold(shared, host) {
		return out
	}
	if net.ParseIP(host) != nil {
		// No SNI for an IP: send the shared name, as before.
		out.ServerName = shared
	}
	// crypto/tls checks one name; both are checked here instead, with
	// what it would check otherwise (chain to RootCAs, server usage).
	out.InsecureSkipVerify = true
	next := cfg.VerifyConnection
	out.VerifyConnection = func(cs tls.ConnectionState) error {
		certs := cs.PeerCertificates
		if len(certs) == 0 {
			return errors.New("tls: the server sent no certificate")
		}
		opts := x509.VerifyOptions{Roots: cfg.RootCAs, Intermediates: x509.NewCertPool()}
		if cfg.Time != nil {
			opts.CurrentTime = cfg.Time()
		}
		for _, c := range certs[1:] {
			opts.Intermediates.AddCert(c)
		}
		opts.DNSName = host
		_, errOwn := certs[0].Verify(opts)
		if errOwn != nil {
			opts.DNSName = shared
			if _, err := certs[0].Verify(opts); err != nil {
				if errors.As(errOwn, new(x509.HostnameError)) && errors.As(err, new(x509.HostnameError)) {
					errOwn = fmt.Errorf("%w, nor %s (the first host of the URL)", errOwn, shared)
				}
				return &tls.CertificateVerificationError{UnverifiedCertificates: certs, Err: errOwn}
			}
		}
		if next != nil {
			return next(cs)
		}
		return nil
	}
	return out
}

// credentials re-reads the password file on every new connection (a
// rotated Secret is used without a restart); nil when the password is not
// from a file.
func (c RedisConfig) credentials(user, first string, log *zap.Logger) func() (string, string) {
	if c.Password != "" || c.PasswordFile == "" {
		return nil
	}
	f := newFileSecret("Redis password", c.PasswordFile, first, log)
	return func() (string, string) { return user, f.get() }
}
