package connect_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/connector-go/connector/internal/connect"
	"github.com/connector-go/connector/internal/testenv"
)

// natsCase is one way of authenticating: a server configuration, client
// configurations that must connect and ones that must be refused, and the
// secrets that must never show up in errors or logs.
type natsCase struct {
	name      string
	configure func(*server.Options)
	good      func(url string) []connect.NATSConfig
	bad       func(url string) []connect.NATSConfig
	secrets   []string
}

func TestNATSAuth(t *testing.T) {
	pki := newPKI(t)
	const (
		password = "s3cret-Passw0rd"
		wrongPW  = "wr0ng-Passw0rd"
		token    = "t0ken-abcdef-123456"
		wrongTok = "t0ken-zzzzzz-999999"
	)
	userKP, _ := nkeys.CreateUser()
	userPub, _ := userKP.PublicKey()
	userSeed, _ := userKP.Seed()
	otherKP, _ := nkeys.CreateUser()
	otherSeed, _ := otherKP.Seed()
	seedFile := writeFile(t, "user.nk", string(userSeed)+"\n")
	otherSeedFile := writeFile(t, "other.nk", string(otherSeed)+"\n")

	op := newOperator(t)
	goodCreds := writeFile(t, "good.creds", string(op.userCreds(t, op.account)))
	strangerAcc, _ := nkeys.CreateAccount()
	badCreds := writeFile(t, "bad.creds", string(op.userCreds(t, strangerAcc)))

	cases := []natsCase{
		{
			name: "user-password",
			configure: func(o *server.Options) {
				o.Username, o.Password = "connector", password
			},
			good: func(url string) []connect.NATSConfig {
				return []connect.NATSConfig{
					{URL: url, User: "connector", Password: password},
					{URL: url, User: "connector", PasswordFile: writeFile(t, "pw", password+"\n")},
					{URL: strings.Replace(url, "nats://", "nats://connector:"+password+"@", 1)},
				}
			},
			bad: func(url string) []connect.NATSConfig {
				return []connect.NATSConfig{
					{URL: url, User: "connector", Password: wrongPW},
					{URL: strings.Replace(url, "nats://", "nats://connector:"+wrongPW+"@", 1)},
					{URL: url},
				}
			},
			secrets: []string{password, wrongPW},
		},
		{
			name:      "token",
			configure: func(o *server.Options) { o.Authorization = token },
			good: func(url string) []connect.NATSConfig {
				return []connect.NATSConfig{
					{URL: url, Token: token},
					{URL: url, TokenFile: writeFile(t, "tok", token+"\n")},
				}
			},
			bad: func(url string) []connect.NATSConfig {
				return []connect.NATSConfig{
					{URL: url, Token: wrongTok},
					{URL: strings.Replace(url, "nats://", "nats://"+wrongTok+"@", 1)},
					{URL: url},
				}
			},
			secrets: []string{token, wrongTok},
		},
		{
			name: "nkey",
			configure: func(o *server.Options) {
				o.Nkeys = []*server.NkeyUser{{Nkey: userPub}}
			},
			good: func(url string) []connect.NATSConfig {
				return []connect.NATSConfig{{URL: url, NKeySeedFile: seedFile}}
			},
			bad: func(url string) []connect.NATSConfig {
				return []connect.NATSConfig{{URL: url, NKeySeedFile: otherSeedFile}, {URL: url}}
			},
			secrets: []string{string(userSeed), string(otherSeed)},
		},
		{
			name: "creds-operator-mode",
			configure: func(o *server.Options) {
				o.JetStream = false
				o.TrustedOperators = []*jwt.OperatorClaims{op.claims}
				o.AccountResolver = op.resolver
			},
			good: func(url string) []connect.NATSConfig {
				return []connect.NATSConfig{{URL: url, CredsFile: goodCreds}}
			},
			bad: func(url string) []connect.NATSConfig {
				return []connect.NATSConfig{{URL: url, CredsFile: badCreds}, {URL: url}}
			},
			secrets: op.seeds,
		},
		{
			name: "tls-custom-ca",
			configure: func(o *server.Options) {
				tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: pki.ServerCert, KeyFile: pki.ServerKey})
				if err != nil {
					t.Fatal(err)
				}
				o.TLSConfig, o.TLS, o.TLSTimeout = tc, true, 5
				o.Username, o.Password = "connector", password
			},
			good: func(url string) []connect.NATSConfig {
				tlsURL := strings.Replace(url, "nats://", "tls://", 1)
				return []connect.NATSConfig{
					{URL: tlsURL, CAFile: pki.CA, User: "connector", Password: password},
					{URL: url, CAFile: pki.CA, User: "connector", Password: password},
				}
			},
			bad: func(url string) []connect.NATSConfig {
				tlsURL := strings.Replace(url, "nats://", "tls://", 1)
				return []connect.NATSConfig{
					{URL: tlsURL, User: "connector", Password: password},                      // system roots
					{URL: tlsURL, CAFile: pki.OtherCA, User: "connector", Password: password}, // wrong CA
					{URL: tlsURL, CAFile: pki.CA, User: "connector", Password: wrongPW},       // right CA, wrong password
					{URL: tlsURL, CAFile: pki.CA},                                             // no auth
				}
			},
			secrets: []string{password, wrongPW},
		},
		{
			name: "mtls",
			configure: func(o *server.Options) {
				tc, err := server.GenTLSConfig(&server.TLSConfigOpts{
					CertFile: pki.ServerCert, KeyFile: pki.ServerKey, CaFile: pki.CA, Verify: true,
				})
				if err != nil {
					t.Fatal(err)
				}
				o.TLSConfig, o.TLS, o.TLSVerify, o.TLSTimeout = tc, true, true, 5
			},
			good: func(url string) []connect.NATSConfig {
				return []connect.NATSConfig{{
					URL: strings.Replace(url, "nats://", "tls://", 1), CAFile: pki.CA,
					CertFile: pki.ClientCert, KeyFile: pki.ClientKey,
				}}
			},
			bad: func(url string) []connect.NATSConfig {
				return []connect.NATSConfig{
					{URL: strings.Replace(url, "nats://", "tls://", 1), CAFile: pki.CA}, // no client cert
				}
			},
			secrets: []string{},
		},
	}

	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := testenv.StartNATS(t, tc.configure)
			core, logs := observer.New(zap.DebugLevel)
			log := zap.New(core)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			for i, cfg := range tc.good(srv.URL) {
				cfg.Name = "test-good"
				nc, err := connect.ConnectNATS(ctx, cfg, log)
				if err != nil {
					t.Fatalf("good config %d (%s): %v", i, cfg, err)
				}
				if err := nc.Flush(); err != nil {
					t.Fatalf("good config %d: flush: %v", i, err)
				}
				assertNoSecret(t, cfg.String(), tc.secrets)
				nc.Close()
			}
			for i, cfg := range tc.bad(srv.URL) {
				nc, err := connect.ConnectNATS(ctx, cfg, log)
				if err == nil {
					nc.Close()
					t.Fatalf("bad config %d (%s) connected", i, cfg)
				}
				t.Logf("bad config %d refused: %v", i, err)
				assertNoSecret(t, err.Error(), tc.secrets)
				assertNoSecret(t, cfg.String(), tc.secrets)
			}
			for _, e := range logs.All() {
				line := e.Message
				for k, v := range e.ContextMap() {
					line += " " + k + "=" + toString(v)
				}
				assertNoSecret(t, line, tc.secrets)
			}
		})
	}
}

// TestNATSErrorsAreClassified: an auth failure keeps nats.ErrAuthorization
// for errors.Is while its text stays clean.
func TestNATSErrorsAreClassified(t *testing.T) {
	const pw = "hunter2-very-secret"
	srv := testenv.StartNATS(t, func(o *server.Options) { o.Username, o.Password = "u", pw })
	url := strings.Replace(srv.URL, "nats://", "nats://u:"+pw+"x@", 1)
	_, err := connect.ConnectNATS(context.Background(), connect.NATSConfig{URL: url}, nil)
	if !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("want nats.ErrAuthorization, got %v", err)
	}
	assertNoSecret(t, err.Error(), []string{pw})
	if !strings.Contains(err.Error(), "u:xxxxx@127.0.0.1") {
		t.Errorf("error should name the redacted URL: %v", err)
	}
}

func TestNATSConfigErrors(t *testing.T) {
	for name, cfg := range map[string]connect.NATSConfig{
		"two methods":        {User: "u", Password: "p4ssword", Token: "t0ken-1234"},
		"missing creds":      {CredsFile: "/nonexistent/x.creds"},
		"missing seed":       {NKeySeedFile: "/nonexistent/x.nk"},
		"missing pw file":    {User: "u", PasswordFile: "/nonexistent/pw"},
		"missing CA":         {CAFile: "/nonexistent/ca.pem"},
		"cert without key":   {CertFile: "/nonexistent/c.pem"},
		"empty secret file":  {TokenFile: writeFile(t, "empty", "\n")},
		"CA is not PEM":      {CAFile: writeFile(t, "ca.pem", "not a certificate")},
		"seed is not a seed": {NKeySeedFile: writeFile(t, "seed", "SUnotaseed")},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := cfg.Options(nil)
			if !errors.Is(err, connect.ErrConfig) {
				t.Fatalf("want ErrConfig, got %v", err)
			}
			assertNoSecret(t, err.Error(), []string{"p4ssword", "t0ken-1234"})
		})
	}
}

// operator is a decentralized-auth setup: operator -> account -> users,
// with the account JWT in a memory resolver.
type operator struct {
	kp       nkeys.KeyPair
	claims   *jwt.OperatorClaims
	account  nkeys.KeyPair
	resolver *server.MemAccResolver
	seeds    []string
}

func newOperator(t *testing.T) *operator {
	t.Helper()
	okp, _ := nkeys.CreateOperator()
	opub, _ := okp.PublicKey()
	oc := jwt.NewOperatorClaims(opub)
	oc.Name = "test-operator"
	ojwt, err := oc.Encode(okp)
	if err != nil {
		t.Fatal(err)
	}
	oc, err = jwt.DecodeOperatorClaims(ojwt)
	if err != nil {
		t.Fatal(err)
	}
	akp, _ := nkeys.CreateAccount()
	apub, _ := akp.PublicKey()
	ac := jwt.NewAccountClaims(apub)
	ac.Name = "connector"
	ajwt, err := ac.Encode(okp)
	if err != nil {
		t.Fatal(err)
	}
	res := &server.MemAccResolver{}
	if err := res.Store(apub, ajwt); err != nil {
		t.Fatal(err)
	}
	return &operator{kp: okp, claims: oc, account: akp, resolver: res}
}

// userCreds makes a user signed by account and returns its .creds file.
func (o *operator) userCreds(t *testing.T, account nkeys.KeyPair) []byte {
	t.Helper()
	ukp, _ := nkeys.CreateUser()
	upub, _ := ukp.PublicKey()
	seed, _ := ukp.Seed()
	uc := jwt.NewUserClaims(upub)
	uc.Name = "connector-worker"
	ujwt, err := uc.Encode(account)
	if err != nil {
		t.Fatal(err)
	}
	creds, err := jwt.FormatUserConfig(ujwt, seed)
	if err != nil {
		t.Fatal(err)
	}
	o.seeds = append(o.seeds, string(seed))
	return creds
}

func assertNoSecret(t *testing.T, text string, secrets []string) {
	t.Helper()
	for _, s := range secrets {
		if s != "" && strings.Contains(text, s) {
			t.Errorf("secret %q leaked in: %s", s, text)
		}
	}
}

func toString(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case error:
		return x.Error()
	default:
		return ""
	}
}

// TestNATSPasswordRotation: with a password file, a password rotated on
// the server and then in the file is picked up on reconnect, without a
// restart, however long the file lags.
func TestNATSPasswordRotation(t *testing.T) {
	const oldPW, newPW = "old-Rot-Pw-111", "new-Rot-Pw-222"
	srv := testenv.StartNATS(t, func(o *server.Options) { o.Username, o.Password = "w", oldPW })
	pwFile := writeFile(t, "pw", oldPW+"\n")
	core, logs := observer.New(zap.DebugLevel)
	nc, err := connect.ConnectNATS(context.Background(), connect.NATSConfig{URL: srv.URL, User: "w", PasswordFile: pwFile}, zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()

	// Rotate in the awkward order: the server first, so the client is
	// refused for a while, then the mounted file catches up.
	opts := srv.Opts.Clone()
	opts.Password = newPW
	if err := srv.Server.ReloadOptions(opts); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 15*time.Second, func() bool {
		n := 0
		for _, e := range logs.All() {
			if s, _ := e.ContextMap()["error"].(string); strings.Contains(strings.ToLower(s), "authorization violation") {
				n++
			}
		}
		return n >= 2 // more than the two after which nats.go would give up by default
	}, "reconnect attempts refused with the old password")
	if nc.IsClosed() {
		t.Fatal("connection closed after authorization errors")
	}
	if err := os.WriteFile(pwFile, []byte(newPW+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 15*time.Second, func() bool {
		return nc.Stats().Reconnects >= 1 && nc.IsConnected()
	}, "reconnect with the rotated password (status %v)", nc.Status())
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	for _, e := range logs.All() {
		line := e.Message
		for k, v := range e.ContextMap() {
			line += " " + k + "=" + toString(v)
		}
		assertNoSecret(t, line, []string{oldPW, newPW})
	}
}

// A lost server is a warning ("nats disconnected"); a connection closed on
// purpose (every shutdown) is not: it logs "nats connection closed" only,
// so that an alert on warnings does not fire at each rollout.
func TestNATSDisconnectWarnsOnlyForOutages(t *testing.T) {
	srv := testenv.StartNATS(t)
	core, logs := observer.New(zap.InfoLevel)
	log := zap.New(core)
	count := func(msg string) int { return logs.FilterMessage(msg).Len() }

	closing, err := connect.ConnectNATS(context.Background(), connect.NATSConfig{URL: srv.URL}, log)
	if err != nil {
		t.Fatal(err)
	}
	closing.Close()
	testenv.Eventually(t, 10*time.Second, func() bool { return count("nats connection closed") == 1 }, "closed logged")
	// Callbacks run in order on one goroutine: a warning of the Close
	// would have come before "closed".
	if n := count("nats disconnected"); n != 0 {
		t.Errorf("Close logged %d disconnect warning(s), want none", n)
	}

	lost, err := connect.ConnectNATS(context.Background(), connect.NATSConfig{URL: srv.URL}, log)
	if err != nil {
		t.Fatal(err)
	}
	defer lost.Close()
	srv.Server.Shutdown()
	srv.Server.WaitForShutdown()
	testenv.Eventually(t, 10*time.Second, func() bool { return count("nats disconnected") > 0 }, "a warning for the lost server")
}
