// Package connect turns flags, environment variables and mounted secret
// files into authenticated, encrypted NATS and Redis connections.
//
// Every way a NATS user authenticates is covered: a credentials file
// (JWT + nkey), an nkey seed, user and password, a token, TLS with a custom
// CA and client certificates (mTLS). Redis takes an ACL user and password,
// TLS (rediss://) with a custom CA and client certificates, and Redis
// Cluster.
//
// Secrets never leave this package in clear: String, the connection
// handlers' log lines, flag usage output and every error returned are
// redacted (see Redact). Secrets can be given as values or, as Kubernetes
// and compose mount them, as files (the *_FILE environment variables).
package connect

import (
	"errors"
	"regexp"
	"strings"
)

// ErrConfig marks an unusable connection configuration (conflicting auth
// methods, unreadable secret or certificate files). The message never
// contains a secret.
var ErrConfig = errors.New("connect: invalid configuration")

// redacted replaces every secret.
const redacted = "xxxxx"

var (
	// scheme://user:password@  (user may be empty: redis://:pw@host)
	reUserPass = regexp.MustCompile(`([A-Za-z][A-Za-z0-9+.\-]*://)([^:/?#@\s]*):([^\s/?#]*)@`)
	// nats://token@host: for NATS-family schemes a lone user is a token.
	reNATSToken = regexp.MustCompile(`(?i)((?:nats|tls|ws|wss)://)([^:/?#@\s]+)@`)
	// token=..., password=... in query strings and key=value DSNs.
	reParam = regexp.MustCompile(`(?i)((?:^|[?&;\s,])(?:token|access_token|auth_token|refresh_token|password|passwd|pwd|secret|client_secret|api_key|apikey|api-key|signature)=)([^&\s#;,]*)`)
	// Authorization: Bearer <token>
	reBearer = regexp.MustCompile(`(?i)(bearer\s+)[A-Za-z0-9._~+/=\-]+`)
)

// Redact replaces passwords and tokens in s with "xxxxx" and leaves the
// rest of the text intact. It follows the same rules as the telemetry
// package's Redact:
//
//	nats://u:secret@h      -> nats://u:xxxxx@h
//	nats://tok@h           -> nats://xxxxx@h   (a lone NATS user is a token)
//	redis://:pw@h          -> redis://:xxxxx@h
//	rediss://user:pw@h     -> rediss://user:xxxxx@h
//	https://h/p?token=abc  -> https://h/p?token=xxxxx (also password, secret, api_key, ...)
//	Bearer abc             -> Bearer xxxxx
//
// It works on URLs embedded in longer text (error messages, comma-separated
// server lists) and never fails.
func Redact(s string) string {
	if !strings.Contains(s, "://") && !strings.Contains(s, "=") && !strings.Contains(strings.ToLower(s), "bearer") {
		return s
	}
	s = reUserPass.ReplaceAllString(s, "${1}${2}:"+redacted+"@")
	s = reNATSToken.ReplaceAllStringFunc(s, func(m string) string {
		i := strings.Index(m, "://")
		return m[:i+3] + redacted + "@"
	})
	s = reParam.ReplaceAllString(s, "${1}"+redacted)
	s = reBearer.ReplaceAllString(s, "${1}"+redacted)
	return s
}

// redactServers is Redact for a comma-separated server list (a flag's or
// a variable's value) whose entries may lack a scheme: nats.go reads
// "u:pw@h:4222" and "token@h:4222" as nats:// URLs and authenticates with
// their credentials, which Redact alone, looking for "://", would leave.
func redactServers(list string) string {
	parts := strings.Split(list, ",")
	for i, p := range parts {
		if strings.Contains(p, "://") || !strings.Contains(p, "@") {
			continue
		}
		trimmed := strings.TrimLeft(p, " \t")
		lead := p[:len(p)-len(trimmed)]
		parts[i] = lead + strings.TrimPrefix(Redact("nats://"+trimmed), "nats://")
	}
	return Redact(strings.Join(parts, ","))
}

// scrub redacts s and also replaces every literal occurrence of the given
// secrets, for text (server errors, dial errors) that may quote a secret
// outside of a URL.
func scrub(s string, secrets ...string) string {
	s = Redact(s)
	for _, sec := range secrets {
		if len(sec) >= 3 { // shorter values would mangle ordinary text
			s = strings.ReplaceAll(s, sec, redacted)
		}
	}
	return s
}

// redactedError carries a scrubbed message and keeps the cause for
// errors.Is/As (nats.ErrAuthorization, ErrConfig, ...). Only Error() is
// safe to print; the cause's own text is not shown.
type redactedError struct {
	msg   string
	cause error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.cause }

// wrapErr returns an error whose text is prefix + ": " + err with every
// secret removed.
func wrapErr(prefix string, err error, secrets ...string) error {
	if err == nil {
		return nil
	}
	return &redactedError{msg: scrub(prefix+": "+err.Error(), secrets...), cause: err}
}
