package connect

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"
)

// DefaultNATSURL is used when neither --nats nor CONNECTOR_NATS_URL is set.
const DefaultNATSURL = "nats://127.0.0.1:4222"

// NATSConfig says how to reach and authenticate to NATS. At most one of
// the authentication methods (CredsFile, NKeySeedFile, User+Password,
// Token) may be set; TLS settings combine with any of them.
type NATSConfig struct {
	URL  string // nats://, tls://; comma-separated list allowed
	Name string // client name, shown by the server's monitoring

	CredsFile    string // JWT+nkey .creds file (decentralized auth)
	NKeySeedFile string // nkey seed file

	User, Password string
	PasswordFile   string // read when Password is empty (mounted secret)
	Token          string
	TokenFile      string // read when Token is empty (mounted secret)

	CAFile, CertFile, KeyFile string // TLS: custom CA; client cert+key for mTLS

	// InboxPrefix replaces "_INBOX" as the prefix of reply subjects
	// (JetStream publish acks, fetches, API replies). Give each role its
	// own (e.g. "_INBOX_worker") and allow it "<InboxPrefix>.>" to
	// subscribe, so that a producer cannot read the replies, and thus the
	// jobs, delivered to workers. See docs/security.md.
	InboxPrefix string
}

// Bind registers the NATS flags on fs with defaults taken from the
// environment through getenv (os.Getenv in main, a map in tests):
//
//	--nats           CONNECTOR_NATS_URL (default nats://127.0.0.1:4222)
//	--nats-creds     CONNECTOR_NATS_CREDS
//	--nats-nkey      CONNECTOR_NATS_NKEY
//	--nats-user      CONNECTOR_NATS_USER
//	--nats-password  CONNECTOR_NATS_PASSWORD, or the file CONNECTOR_NATS_PASSWORD_FILE (--nats-password-file)
//	--nats-token     CONNECTOR_NATS_TOKEN, or the file CONNECTOR_NATS_TOKEN_FILE (--nats-token-file)
//	--nats-ca        CONNECTOR_NATS_CA
//	--nats-cert      CONNECTOR_NATS_CERT
//	--nats-key       CONNECTOR_NATS_KEY
//	--nats-inbox-prefix CONNECTOR_NATS_INBOX_PREFIX (default _INBOX)
//
// Secret defaults are shown as "xxxxx" by -help and URLs are redacted.
// Prefer the *_FILE variables: a secret passed as a flag is visible in the
// process list.
func (c *NATSConfig) Bind(fs *flag.FlagSet, getenv func(string) string) {
	c.URL = envOr(getenv, "CONNECTOR_NATS_URL", DefaultNATSURL)
	env := fromEnv{}
	env.envDefault(&c.CredsFile, getenv, "CONNECTOR_NATS_CREDS", "")
	env.envDefault(&c.NKeySeedFile, getenv, "CONNECTOR_NATS_NKEY", "")
	env.envDefault(&c.User, getenv, "CONNECTOR_NATS_USER", "")
	env.envDefault(&c.Password, getenv, "CONNECTOR_NATS_PASSWORD", "")
	env.envDefault(&c.PasswordFile, getenv, "CONNECTOR_NATS_PASSWORD_FILE", "")
	env.envDefault(&c.Token, getenv, "CONNECTOR_NATS_TOKEN", "")
	env.envDefault(&c.TokenFile, getenv, "CONNECTOR_NATS_TOKEN_FILE", "")
	c.CAFile = envOr(getenv, "CONNECTOR_NATS_CA", "")
	c.CertFile = envOr(getenv, "CONNECTOR_NATS_CERT", "")
	c.KeyFile = envOr(getenv, "CONNECTOR_NATS_KEY", "")
	c.InboxPrefix = envOr(getenv, "CONNECTOR_NATS_INBOX_PREFIX", "")

	fs.Var((*urlValue)(&c.URL), "nats", "NATS server URL(s), comma-separated; nats:// or tls:// (env CONNECTOR_NATS_URL)")
	// Flags beat the environment, also its other ways to give the same
	// secret and its other authentication methods: --nats-password-file
	// wins over CONNECTOR_NATS_PASSWORD, --nats-user over
	// CONNECTOR_NATS_TOKEN.
	bindAuth(fs, env, [][]authFlag{
		{{&c.CredsFile, "nats-creds", "NATS credentials file, JWT + nkey (env CONNECTOR_NATS_CREDS)", false}},
		{{&c.NKeySeedFile, "nats-nkey", "NATS nkey seed file (env CONNECTOR_NATS_NKEY)", false}},
		{
			{&c.User, "nats-user", "NATS user (env CONNECTOR_NATS_USER)", false},
			{&c.Password, "nats-password", "NATS password (env CONNECTOR_NATS_PASSWORD; prefer --nats-password-file)", true},
			{&c.PasswordFile, "nats-password-file", "file holding the NATS password (env CONNECTOR_NATS_PASSWORD_FILE)", false},
		},
		{
			{&c.Token, "nats-token", "NATS token (env CONNECTOR_NATS_TOKEN; prefer --nats-token-file)", true},
			{&c.TokenFile, "nats-token-file", "file holding the NATS token (env CONNECTOR_NATS_TOKEN_FILE)", false},
		},
	}, map[*string]*string{&c.Password: &c.PasswordFile, &c.PasswordFile: &c.Password, &c.Token: &c.TokenFile, &c.TokenFile: &c.Token})
	fs.StringVar(&c.CAFile, "nats-ca", c.CAFile, "PEM file of the CA that signed the NATS server certificate (env CONNECTOR_NATS_CA)")
	fs.StringVar(&c.CertFile, "nats-cert", c.CertFile, "PEM client certificate for NATS mTLS (env CONNECTOR_NATS_CERT)")
	fs.StringVar(&c.KeyFile, "nats-key", c.KeyFile, "PEM client key for NATS mTLS (env CONNECTOR_NATS_KEY)")
	fs.StringVar(&c.InboxPrefix, "nats-inbox-prefix", c.InboxPrefix, "reply subject prefix instead of _INBOX, to scope subscribe permissions per role (env CONNECTOR_NATS_INBOX_PREFIX)")
}

// secrets lists the secret values known without reading files, for
// scrubbing error text.
func (c NATSConfig) secrets() []string {
	return append([]string{c.Password, c.Token}, urlSecrets(c.URL)...)
}

// String describes the configuration for logs, with every secret redacted.
func (c NATSConfig) String() string {
	var b strings.Builder
	b.WriteString(redactServers(c.URL))
	switch {
	case c.CredsFile != "":
		fmt.Fprintf(&b, " auth=creds:%s", c.CredsFile)
	case c.NKeySeedFile != "":
		fmt.Fprintf(&b, " auth=nkey:%s", c.NKeySeedFile)
	case c.User != "":
		fmt.Fprintf(&b, " auth=user:%s", c.User)
		if c.Password != "" || c.PasswordFile != "" {
			b.WriteString(" password=" + redacted)
		}
	case c.Token != "" || c.TokenFile != "":
		b.WriteString(" auth=token:" + redacted)
	}
	if c.CAFile != "" {
		fmt.Fprintf(&b, " ca=%s", c.CAFile)
	}
	if c.CertFile != "" {
		fmt.Fprintf(&b, " cert=%s", c.CertFile)
	}
	if c.InboxPrefix != "" {
		fmt.Fprintf(&b, " inbox=%s", c.InboxPrefix)
	}
	if c.Name != "" {
		fmt.Fprintf(&b, " name=%s", c.Name)
	}
	return b.String()
}

// GoString keeps %#v from printing secrets.
func (c NATSConfig) GoString() string { return "connect.NATSConfig{" + c.String() + "}" }

// Options returns the nats.Options for c: authentication, TLS, reconnect
// forever (MaxReconnects(-1)) and handlers that log disconnects,
// reconnects, closes and asynchronous errors (permission violations, slow
// consumers) with the server URL redacted. A nil log discards them.
func (c NATSConfig) Options(log *zap.Logger) ([]nats.Option, error) {
	if log == nil {
		log = zap.NewNop()
	}
	password, err := secret("NATS password", c.Password, c.PasswordFile)
	if err != nil {
		return nil, err
	}
	token, err := secret("NATS token", c.Token, c.TokenFile)
	if err != nil {
		return nil, err
	}
	var methods []string
	if c.CredsFile != "" {
		methods = append(methods, "creds")
	}
	if c.NKeySeedFile != "" {
		methods = append(methods, "nkey")
	}
	if c.User != "" || password != "" {
		methods = append(methods, "user/password")
	}
	if token != "" {
		methods = append(methods, "token")
	}
	if len(methods) > 1 {
		return nil, fmt.Errorf("%w: NATS: choose one authentication method, got %s", ErrConfig, strings.Join(methods, " and "))
	}

	name := c.Name
	if name == "" {
		name = "connector"
	}
	servers := redactServers(c.URL)
	urlField := func(nc *nats.Conn) zap.Field {
		if u := nc.ConnectedUrlRedacted(); u != "" {
			return zap.String("url", Redact(u))
		}
		return zap.String("url", servers)
	}
	opts := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		nats.Timeout(5 * time.Second),
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			if nc.IsClosed() {
				return // our own Close: "nats connection closed" says it
			}
			fields := []zap.Field{urlField(nc)}
			if err != nil {
				fields = append(fields, zap.String("error", scrub(err.Error(), password, token)))
			}
			log.Warn("nats disconnected", fields...)
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("nats reconnected", urlField(nc))
		}),
		nats.ClosedHandler(func(nc *nats.Conn) {
			fields := []zap.Field{}
			if err := nc.LastError(); err != nil {
				fields = append(fields, zap.String("error", scrub(err.Error(), password, token)))
			}
			log.Info("nats connection closed", fields...)
		}),
		nats.ErrorHandler(func(nc *nats.Conn, sub *nats.Subscription, err error) {
			fields := []zap.Field{urlField(nc)}
			if sub != nil {
				fields = append(fields, zap.String("subject", sub.Subject))
			}
			fields = append(fields, zap.String("error", scrub(err.Error(), password, token)))
			log.Error("nats error", fields...)
		}),
	}
	switch {
	case c.CredsFile != "":
		if _, err := os.Stat(c.CredsFile); err != nil {
			return nil, fmt.Errorf("%w: NATS credentials file: %v", ErrConfig, err)
		}
		opts = append(opts, nats.UserCredentials(c.CredsFile))
	case c.NKeySeedFile != "":
		o, err := nats.NkeyOptionFromSeed(c.NKeySeedFile)
		if err != nil {
			return nil, fmt.Errorf("%w: NATS nkey seed file %s: %s", ErrConfig, c.NKeySeedFile, Redact(err.Error()))
		}
		opts = append(opts, o)
	case c.User != "" || password != "":
		if c.Password == "" && c.PasswordFile != "" {
			// Re-read the mounted secret on every (re)connect: a rotated
			// password is used without a restart.
			user, fsec := c.User, newFileSecret("NATS password", c.PasswordFile, password, log)
			opts = append(opts, nats.UserInfoHandler(func() (string, string) { return user, fsec.get() }))
		} else {
			opts = append(opts, nats.UserInfo(c.User, password))
		}
	case token != "":
		if c.Token == "" && c.TokenFile != "" {
			opts = append(opts, nats.TokenHandler(newFileSecret("NATS token", c.TokenFile, token, log).get))
		} else {
			opts = append(opts, nats.Token(token))
		}
	}
	if c.CredsFile != "" || (c.Password == "" && c.PasswordFile != "") || (c.Token == "" && c.TokenFile != "") {
		// Secrets from files may be rotated on the server before the
		// mounted file catches up: keep retrying instead of giving up
		// after two identical authorization errors (the nats.go default).
		opts = append(opts, nats.IgnoreAuthErrorAbort())
	}
	if c.InboxPrefix != "" {
		if strings.ContainsAny(c.InboxPrefix, "*> ") || strings.HasSuffix(c.InboxPrefix, ".") {
			return nil, fmt.Errorf("%w: NATS inbox prefix %q: no wildcards, spaces or trailing dot", ErrConfig, c.InboxPrefix)
		}
		opts = append(opts, nats.CustomInboxPrefix(c.InboxPrefix))
	}
	tc, err := tlsConfig("NATS", c.CAFile, c.CertFile, c.KeyFile)
	if err != nil {
		return nil, err
	}
	if tc != nil {
		opts = append(opts, nats.Secure(tc))
	}
	return opts, nil
}

// ConnectNATS connects with c's options, waiting at most until ctx is done.
// The returned error never contains a secret; it wraps the nats.go error
// (errors.Is(err, nats.ErrAuthorization) works) or ErrConfig.
func ConnectNATS(ctx context.Context, c NATSConfig, log *zap.Logger) (*nats.Conn, error) {
	opts, err := c.Options(log)
	if err != nil {
		return nil, err
	}
	url := c.URL
	if url == "" {
		url = DefaultNATSURL
	}
	type result struct {
		nc  *nats.Conn
		err error
	}
	done := make(chan result, 1)
	go func() {
		nc, err := nats.Connect(url, opts...)
		done <- result{nc, err}
	}()
	select {
	case r := <-done:
		if r.err != nil {
			return nil, c.connErr(r.err)
		}
		return r.nc, nil
	case <-ctx.Done():
		go func() {
			if r := <-done; r.nc != nil {
				r.nc.Close()
			}
		}()
		return nil, c.connErr(ctx.Err())
	}
}

func (c NATSConfig) connErr(err error) error {
	secrets := c.secrets()
	if c.PasswordFile != "" || c.TokenFile != "" {
		// Best effort: scrub file-held secrets too.
		if p, e := secret("", "", c.PasswordFile); e == nil {
			secrets = append(secrets, p)
		}
		if t, e := secret("", "", c.TokenFile); e == nil {
			secrets = append(secrets, t)
		}
	}
	return wrapErr("connect: nats "+redactServers(c.URL), err, secrets...)
}

// DrainNATS drains nc (subscriptions end, everything buffered is flushed
// to the server) and waits for that, at most wait, then closes it. nats.go's
// Drain alone returns at once and drains in the background, which a
// process exiting next cuts short: the last acks or publishes would be
// lost.
func DrainNATS(nc *nats.Conn, wait time.Duration) {
	closed := nc.StatusChanged(nats.CLOSED)
	if err := nc.Drain(); err == nil {
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case <-closed:
		case <-t.C:
		}
	}
	nc.Close()
}
