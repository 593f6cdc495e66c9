package connect_test

import (
	"errors"
	"flag"
	"io"
	"testing"

	"github.com/connector-go/connector/internal/connect"
)

// A flag beats the environment also where the environment gives the same
// secret another way or chooses another authentication method: a mounted
// secret passed as --nats-password-file is used although the image sets
// CONNECTOR_NATS_PASSWORD, and --nats-user/--nats-password are not refused
// as a second method because CONNECTOR_NATS_TOKEN is set.
func TestAuthFlagsBeatOtherWaysOfTheEnvironment(t *testing.T) {
	pwFile := writeFile(t, "pw", "file-Pw\n")
	bind := func(env map[string]string, args ...string) (connect.NATSConfig, connect.RedisConfig) {
		t.Helper()
		var n connect.NATSConfig
		var r connect.RedisConfig
		fs := flag.NewFlagSet("x", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		n.Bind(fs, func(k string) string { return env[k] })
		r.Bind(fs, func(k string) string { return env[k] })
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		return n, r
	}

	t.Run("password file flag beats password variable", func(t *testing.T) {
		n, r := bind(map[string]string{"CONNECTOR_NATS_USER": "u", "CONNECTOR_NATS_PASSWORD": "env-Pw", "CONNECTOR_REDIS_PASSWORD": "env-Pw"},
			"--nats-password-file", pwFile, "--redis-password-file", pwFile)
		if n.Password != "" || n.PasswordFile != pwFile || n.User != "u" {
			t.Errorf("nats: password %q file %q user %q; want the file and the user kept", n.Password, n.PasswordFile, n.User)
		}
		if r.Password != "" || r.PasswordFile != pwFile {
			t.Errorf("redis: password %q file %q; want the file", r.Password, r.PasswordFile)
		}
	})
	t.Run("token file flag beats token variable", func(t *testing.T) {
		n, _ := bind(map[string]string{"CONNECTOR_NATS_TOKEN": "env-Tok"}, "--nats-token-file", pwFile)
		if n.Token != "" || n.TokenFile != pwFile {
			t.Errorf("token %q file %q", n.Token, n.TokenFile)
		}
	})
	t.Run("user flags beat token variable", func(t *testing.T) {
		n, _ := bind(map[string]string{"CONNECTOR_NATS_TOKEN": "env-Tok", "CONNECTOR_NATS_CREDS": "/env/x.creds"},
			"--nats-user", "flag-user", "--nats-password", "flag-Pw")
		if n.Token != "" || n.CredsFile != "" {
			t.Errorf("token %q creds %q kept from the environment", n.Token, n.CredsFile)
		}
		if _, err := n.Options(nil); err != nil {
			t.Errorf("options: %v", err)
		}
	})
	t.Run("two methods on the command line are still refused", func(t *testing.T) {
		n, _ := bind(nil, "--nats-token", "flag-Tok", "--nats-user", "flag-user")
		if _, err := n.Options(nil); !errors.Is(err, connect.ErrConfig) {
			t.Errorf("options: %v, want ErrConfig", err)
		}
	})
	t.Run("an empty flag chooses nothing", func(t *testing.T) {
		n, _ := bind(map[string]string{"CONNECTOR_NATS_USER": "u", "CONNECTOR_NATS_PASSWORD": "env-Pw"}, "--nats-token", "")
		if n.User != "u" || n.Password != "env-Pw" {
			t.Errorf("user %q password %q: an empty --nats-token cleared them", n.User, n.Password)
		}
	})
}
