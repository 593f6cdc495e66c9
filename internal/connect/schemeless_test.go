package connect_test

import (
	"bytes"
	"context"
	"flag"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/connector-go/connector/internal/connect"
	"github.com/connector-go/connector/internal/testenv"
)

// nats.go reads a server URL without a scheme as nats:// ("u:pw@h:4222",
// "token@h:4222", also as a later entry of a list): its credentials are
// used, so they must be redacted like those of a nats:// URL, in -help,
// String, errors and logs.
func TestNATSSchemelessURLSecrets(t *testing.T) {
	const pw, tok = "S3cret-Schemeless", "T0ken-Schemeless"
	srv := testenv.StartNATS(t, func(o *server.Options) { o.Username, o.Password = "user", pw })
	hostPort := strings.TrimPrefix(srv.URL, "nats://")

	// nats.go does authenticate with a scheme-less URL's credentials: the
	// form is a working configuration, not a typo.
	nc, err := connect.ConnectNATS(context.Background(), connect.NATSConfig{URL: "user:" + pw + "@" + hostPort}, nil)
	if err != nil {
		t.Fatalf("scheme-less URL with credentials: %v", err)
	}
	nc.Close()

	for _, url := range []string{
		"user:" + pw + "@127.0.0.1:1",
		tok + "@127.0.0.1:1",
		"nats://127.0.0.1:2,user:" + pw + "@127.0.0.1:1",
		"nats://" + tok + "@127.0.0.1:2," + tok + "@127.0.0.1:1",
	} {
		t.Run(url[:8], func(t *testing.T) {
			leaks := func(what, text string) {
				t.Helper()
				if strings.Contains(text, pw) || strings.Contains(text, tok) {
					t.Errorf("%s shows the secret: %s", what, text)
				}
			}
			var c connect.NATSConfig
			fs := flag.NewFlagSet("connector", flag.ContinueOnError)
			var help bytes.Buffer
			fs.SetOutput(&help)
			c.Bind(fs, func(k string) string {
				if k == "CONNECTOR_NATS_URL" {
					return url
				}
				return ""
			})
			fs.PrintDefaults()
			leaks("-help", help.String())
			leaks("String", c.String())
			leaks("%#v", c.GoString())

			var logged testenv.Buffer
			log := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(&logged), zap.DebugLevel))
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := connect.ConnectNATS(ctx, c, log)
			if err == nil || !strings.Contains(err.Error(), "127.0.0.1:1") {
				t.Fatalf("err = %v, want a connection error naming the server", err)
			}
			leaks("error", err.Error())
			leaks("log", logged.String())
		})
	}
}
