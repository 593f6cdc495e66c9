package telemetry

import (
	"context"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// LoggerOption adjusts NewLogger.
type LoggerOption func(*loggerConfig)

type loggerConfig struct {
	out io.Writer
}

// WithLogOutput sends log lines to w instead of standard error (tests, or a
// file). w is wrapped with zapcore.AddSync, so it need not be safe for
// concurrent use beyond what zap's core lock gives.
func WithLogOutput(w io.Writer) LoggerOption {
	return func(c *loggerConfig) { c.out = w }
}

// NewLogger builds the process logger.
//
// format "json" is the production encoding: one JSON object per line with
// the keys ts (ISO8601), level, logger, caller, msg, stacktrace (error level
// and above) plus the fields of the call. format "console" is zap's
// development encoding, coloured levels and tab-separated, for humans.
// level is one of debug, info, warn, error ("" means info).
//
// The logger never redacts by itself: pass URLs and DSNs through Redact (or
// use the RedactedURL field) before logging them.
func NewLogger(level, format string, opts ...LoggerOption) (*zap.Logger, error) {
	cfg := loggerConfig{out: os.Stderr}
	for _, o := range opts {
		o(&cfg)
	}
	if level == "" {
		level = "info"
	}
	lvl, err := zapcore.ParseLevel(strings.ToLower(level))
	if err != nil {
		return nil, fmt.Errorf("telemetry: log level %q: %w", level, err)
	}
	var (
		enc     zapcore.Encoder
		zapOpts = []zap.Option{zap.AddCaller(), zap.ErrorOutput(zapcore.Lock(zapcore.AddSync(os.Stderr)))}
	)
	switch strings.ToLower(format) {
	case "json", "":
		ec := zap.NewProductionEncoderConfig()
		ec.EncodeTime = zapcore.ISO8601TimeEncoder
		enc = zapcore.NewJSONEncoder(ec)
		zapOpts = append(zapOpts, zap.AddStacktrace(zapcore.ErrorLevel))
	case "console":
		ec := zap.NewDevelopmentEncoderConfig()
		ec.EncodeLevel = zapcore.CapitalColorLevelEncoder
		enc = zapcore.NewConsoleEncoder(ec)
		zapOpts = append(zapOpts, zap.AddStacktrace(zapcore.ErrorLevel), zap.Development())
	default:
		return nil, fmt.Errorf("telemetry: log format %q: want json or console", format)
	}
	core := zapcore.NewCore(enc, zapcore.Lock(zapcore.AddSync(cfg.out)), lvl)
	return zap.New(core, zapOpts...), nil
}

// TraceFields returns the zap fields trace_id and span_id of ctx's span (none
// when ctx carries no valid span), so log lines can be joined with traces:
//
//	log.With(telemetry.TraceFields(ctx)...).Info("job done")
func TraceFields(ctx context.Context) []zap.Field {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() {
		return nil
	}
	return []zap.Field{
		zap.String("trace_id", sc.TraceID().String()),
		zap.String("span_id", sc.SpanID().String()),
	}
}

// RedactedURL is a zap field holding Redact(url).
func RedactedURL(key, url string) zap.Field { return zap.String(key, Redact(url)) }

// ErrField is zap.Error with the message redacted (Redact): errors often
// quote the URL or the credentials they failed with. Every log line of the
// runtime uses it.
func ErrField(err error) zap.Field {
	if err == nil {
		return zap.Skip()
	}
	return zap.String("error", Redact(err.Error()))
}

// redacted replaces every secret Redact finds.
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
// rest of the text intact:
//
//	nats://u:pw@h          -> nats://u:xxxxx@h
//	nats://tok@h           -> nats://xxxxx@h   (a lone NATS user is a token)
//	redis://:pw@h          -> redis://:xxxxx@h
//	rediss://user:pw@h     -> rediss://user:xxxxx@h
//	https://h/p?token=abc  -> https://h/p?token=xxxxx (also password, secret, api_key, ...)
//	Bearer abc             -> Bearer xxxxx
//
// It works on URLs embedded in longer text (error messages, comma-separated
// server lists) and never fails; it is meant for logs and health output, not
// as a security boundary.
func Redact(s string) string {
	if !strings.Contains(s, "://") && !strings.Contains(s, "=") && !containsFold(s, "bearer") {
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

func containsFold(s, sub string) bool {
	return strings.Contains(strings.ToLower(s), sub)
}

// RedisLogs is go-redis's own logging (redis.SetLogger: a process-wide
// setting) sent to log at warn level, under logger name "go-redis" and
// redacted, instead of go-redis's default: plain lines on standard error
// ("redis: <date> pool.go:...: failed to dial ..."), which break a JSON
// log stream during every Redis outage. The processes set it at start
// (app.Open); a library never does.
func RedisLogs(log *zap.Logger) interface {
	Printf(ctx context.Context, format string, v ...any)
} {
	return redisLogs{log.Named("go-redis").WithOptions(zap.AddCallerSkip(2))}
}

type redisLogs struct{ log *zap.Logger }

func (l redisLogs) Printf(_ context.Context, format string, v ...any) {
	if ce := l.log.Check(zap.WarnLevel, ""); ce != nil {
		ce.Message = Redact(strings.TrimSpace(fmt.Sprintf(format, v...)))
		ce.Write()
	}
}

// OTelErrors is OpenTelemetry's error handler (otel.SetErrorHandler: a
// process-wide setting) sending the SDK's own errors (a span export that
// fails while the collector is down, a metrics callback that fails during
// a scrape) to log at warn level, under logger name "otel" and redacted,
// instead of OpenTelemetry's default: plain lines on standard error
// through the log package, which break a JSON log stream. The processes
// set it at start (app.Open); a library never does.
func OTelErrors(log *zap.Logger) otel.ErrorHandler {
	log = log.Named("otel")
	return otel.ErrorHandlerFunc(func(err error) {
		log.Warn("opentelemetry error", ErrField(err))
	})
}
