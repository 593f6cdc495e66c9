package deploy_test

import (
	"bufio"
	"context"
	"encoding/json"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/connector-go/connector/internal/streams"
	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/internal/wire"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"sigs.k8s.io/yaml"
)

const (
	composeFile = "../docker-compose.yml"
	composeDir  = "compose"
)

// ---- production NATS config (deploy/nats) ----

// parseProductionNATS parses nats/nats-server.conf, with the variables it
// reads from the environment set, optionally with sync_interval replaced.
func parseProductionNATS(t *testing.T, syncInterval string) *server.Options {
	t.Helper()
	t.Setenv("SERVER_NAME", "nats-0")
	t.Setenv("NATS_PRODUCER_PASSWORD", "test-producer")
	t.Setenv("NATS_WORKER_PASSWORD", "test-worker")
	t.Setenv("NATS_OPERATOR_PASSWORD", "test-operator")
	t.Setenv("NATS_SYS_PASSWORD", "test-sys")
	path := filepath.Join("nats", "nats-server.conf")
	if syncInterval != "" {
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		re := regexp.MustCompile(`(?m)^(\s*)sync_interval: .*$`)
		if !re.Match(raw) {
			t.Fatal("no sync_interval line in nats/nats-server.conf")
		}
		path = filepath.Join(t.TempDir(), "nats-server.conf")
		if err := os.WriteFile(path, re.ReplaceAll(raw, []byte("${1}sync_interval: "+syncInterval)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	opts, err := server.ProcessConfigFile(path)
	if err != nil {
		t.Fatalf("nats/nats-server.conf: %v", err)
	}
	return opts
}

func TestProductionNATSConfig(t *testing.T) {
	opts := parseProductionNATS(t, "")
	if opts.ServerName != "nats-0" {
		t.Errorf("server_name %q: want it from $SERVER_NAME", opts.ServerName)
	}
	if !opts.JetStream || opts.StoreDir == "" {
		t.Errorf("JetStream %v, store_dir %q", opts.JetStream, opts.StoreDir)
	}
	// The sync_interval choice is explicit and both settings are valid.
	if opts.SyncAlways || opts.SyncInterval != 2*time.Minute {
		t.Errorf("sync_interval: always=%v interval=%v, want the documented explicit 2m", opts.SyncAlways, opts.SyncInterval)
	}
	if always := parseProductionNATS(t, "always"); !always.SyncAlways {
		t.Error("sync_interval: always did not set SyncAlways")
	}
	// A 3-node cluster, so that streams can be R3.
	if opts.Cluster.Name == "" || opts.Cluster.Port != 6222 || len(opts.Routes) != 3 {
		t.Errorf("cluster %q port %d with %d routes, want 3 routes on 6222", opts.Cluster.Name, opts.Cluster.Port, len(opts.Routes))
	}
	if opts.HTTPPort != 8222 {
		t.Errorf("monitoring port %d, want 8222 (KEDA reads /jsz)", opts.HTTPPort)
	}
	if opts.LameDuckDuration != 30*time.Second || opts.LameDuckGracePeriod != 10*time.Second {
		t.Errorf("lame duck duration %v, grace %v: want 30s, 10s", opts.LameDuckDuration, opts.LameDuckGracePeriod)
	}
	checkUsers(t, opts, map[string]string{"producer": "test-producer", "worker": "test-worker", "operator": "test-operator"})
}

// The production users have exactly the permissions docs/security.md lists
// for each role (which TestLeastPrivilege in internal/connect exercises),
// and there is no other user in the CONNECTOR account.
func TestProductionNATSPermissionsMatchSecurityDoc(t *testing.T) {
	checkPermissionsMatchDoc(t, "nats/nats-server.conf", parseProductionNATS(t, ""))
}

// checkUsers checks that the users exist in account CONNECTOR with the
// given passwords.
func checkUsers(t *testing.T, opts *server.Options, want map[string]string) {
	t.Helper()
	got := map[string]*server.User{}
	for _, u := range opts.Users {
		got[u.Username] = u
	}
	for name, pw := range want {
		u := got[name]
		switch {
		case u == nil:
			t.Errorf("no NATS user %q", name)
		case u.Account == nil || u.Account.Name != "CONNECTOR":
			t.Errorf("user %q not in account CONNECTOR", name)
		case u.Password != pw:
			t.Errorf("user %q: password not taken from its secret", name)
		}
	}
}

// ---- Compose: NATS and Redis configs with generated secrets ----

// genSecrets runs deploy/compose/gen-secrets.sh into dir.
func genSecrets(t *testing.T, dir string, args ...string) {
	t.Helper()
	script, err := filepath.Abs(filepath.Join(composeDir, "gen-secrets.sh"))
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("sh", append([]string{script, dir}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("gen-secrets.sh: %v\n%s", err, out)
	}
}

func readSecret(t *testing.T, dir, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// composeNATS lays out the Compose NATS config with freshly generated
// secrets as in the container (/etc/nats/nats.conf includes
// /run/secrets/...), parses it and returns the options and the secrets
// directory.
func composeNATS(t *testing.T) (*server.Options, string) {
	t.Helper()
	root := t.TempDir()
	secrets := filepath.Join(root, "run", "secrets")
	genSecrets(t, secrets)
	conf := filepath.Join(root, "etc", "nats", "nats.conf")
	raw, err := os.ReadFile(filepath.Join(composeDir, "nats.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(conf), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(conf, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	parsed, err := server.ProcessConfigFile(conf)
	if err != nil {
		t.Fatalf("compose/nats.conf: %v", err)
	}
	return parsed, secrets
}

// The Compose NATS config, with secrets from gen-secrets.sh, parses, and a
// server started from it serves the three roles of docs/security.md: the
// operator provisions the streams, the producer publishes a job (acks on
// its own inbox prefix), the worker checks the streams; the producer and
// the worker cannot delete a stream nor read another role's inbox, and a
// wrong password is refused.
func TestComposeNATSWithGeneratedSecrets(t *testing.T) {
	root := t.TempDir()
	secrets := filepath.Join(root, "run", "secrets")
	genSecrets(t, secrets)

	// Idempotent unless --force.
	before := readSecret(t, secrets, "nats_worker_password")
	genSecrets(t, secrets)
	if readSecret(t, secrets, "nats_worker_password") != before {
		t.Fatal("gen-secrets.sh replaced existing secrets without --force")
	}
	genSecrets(t, secrets, "--force")
	workerPW := readSecret(t, secrets, "nats_worker_password")
	producerPW := readSecret(t, secrets, "nats_producer_password")
	operatorPW := readSecret(t, secrets, "nats_operator_password")
	if workerPW == before || len(workerPW) < 32 || workerPW == producerPW || operatorPW == workerPW || len(operatorPW) < 32 {
		t.Fatalf("passwords not rotated, too short or shared: %d chars", len(workerPW))
	}
	for _, name := range []string{"nats_worker_password", "nats_operator_password", "redis_password"} {
		fi, err := os.Stat(filepath.Join(secrets, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm()&0o004 == 0 {
			t.Errorf("%s: mode %v, containers running as another uid cannot read it", name, fi.Mode())
		}
	}
	redisPW := readSecret(t, secrets, "redis_password")
	if !strings.Contains(readSecret(t, secrets, "redis_auth.conf"), "\nrequirepass "+redisPW+"\n") {
		t.Error("redis_auth.conf does not set requirepass to redis_password")
	}
	redisConf, err := os.ReadFile(filepath.Join(composeDir, "redis.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^include /run/secrets/redis_auth\.conf$`).Match(redisConf) {
		t.Error("compose/redis.conf does not include /run/secrets/redis_auth.conf")
	}

	parsed, secrets := composeNATS(t)
	if !parsed.JetStream {
		t.Error("compose/nats.conf: JetStream off")
	}
	workerPW = readSecret(t, secrets, "nats_worker_password")
	producerPW = readSecret(t, secrets, "nats_producer_password")
	operatorPW = readSecret(t, secrets, "nats_operator_password")
	checkUsers(t, parsed, map[string]string{"producer": producerPW, "worker": workerPW, "operator": operatorPW})

	srv := testenv.StartNATS(t, func(o *server.Options) {
		o.Accounts, o.Users, o.SystemAccount = parsed.Accounts, parsed.Users, parsed.SystemAccount
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	if nc, err := nats.Connect(srv.URL, nats.UserInfo("worker", "wrong")); err == nil {
		nc.Close()
		t.Fatal("connected with a wrong password")
	}
	// Permission errors arrive asynchronously too: collect them.
	type role struct {
		js   jetstream.JetStream
		nc   *nats.Conn
		errs chan error
	}
	connect := func(user, pw string) role {
		errs := make(chan error, 16)
		nc := srv.Connect(t, nats.UserInfo(user, pw), nats.CustomInboxPrefix("_INBOX_"+user),
			nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
				select {
				case errs <- err:
				default:
				}
			}))
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		return role{js: js, nc: nc, errs: errs}
	}
	operator, worker, producer := connect("operator", operatorPW), connect("worker", workerPW), connect("producer", producerPW)

	names := wire.MustNames(wire.DefaultPrefix)
	if err := streams.Ensure(ctx, operator.js, streams.Config{Names: names}); err != nil {
		t.Fatalf("operator provisions the streams: %v", err)
	}
	if err := streams.Check(ctx, worker.js, names); err != nil {
		t.Fatalf("worker checks the streams: %v", err)
	}
	if _, err := producer.js.Publish(ctx, wire.DefaultPrefix+".jobs.root.0", []byte("job")); err != nil {
		t.Fatalf("producer publishes a job: %v", err)
	}
	denyCtx, denyCancel := context.WithTimeout(ctx, time.Second)
	defer denyCancel()
	for who, r := range map[string]role{"producer": producer, "worker": worker} {
		if err := r.js.DeleteStream(denyCtx, names.JobsStream()); err == nil {
			t.Errorf("%s deleted a stream; its permissions should deny it", who)
		}
		if _, err := r.nc.SubscribeSync("_INBOX_operator.>"); err == nil {
			if err := r.nc.Flush(); err == nil {
				select {
				case err := <-r.errs:
					if !strings.Contains(err.Error(), "Permissions Violation") {
						t.Errorf("%s subscribing to the operator's inbox: %v", who, err)
					}
				case <-time.After(2 * time.Second):
					t.Errorf("%s may subscribe to the operator's inbox", who)
				}
			}
		}
	}
	if _, err := worker.js.CreateStream(denyCtx, jetstream.StreamConfig{Name: "OTHER", Subjects: []string{"other.>"}}); err == nil {
		t.Error("worker created a stream; only the operator may")
	}
	info, err := operator.js.Stream(ctx, names.JobsStream())
	if err != nil {
		t.Fatalf("stream gone: %v", err)
	}
	if info.CachedInfo().State.Msgs != 1 {
		t.Errorf("stream holds %d messages, want 1", info.CachedInfo().State.Msgs)
	}
}

// securityDocUsers parses the NATS users block of docs/security.md (the
// fenced block after "The permissions for `P = connector`") inside an
// account, as the doc says to use it.
func securityDocUsers(t *testing.T) map[string]*server.User {
	t.Helper()
	doc, err := os.ReadFile(filepath.Join("..", "docs", "security.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(doc), "The permissions for `P = connector`")
	if !ok {
		t.Fatal("docs/security.md: no permissions section for P = connector")
	}
	_, block, ok := strings.Cut(after, "```\n")
	if ok {
		block, _, ok = strings.Cut(block, "```")
	}
	if !ok || !strings.Contains(block, "user: producer") {
		t.Fatal("docs/security.md: no fenced users block after the permissions heading")
	}
	conf := filepath.Join(t.TempDir(), "doc.conf")
	body := "accounts { CONNECTOR { jetstream: enabled, users: [\n" + block + "\n] } }\n"
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"NATS_PRODUCER_PASSWORD", "NATS_WORKER_PASSWORD", "NATS_OPERATOR_PASSWORD"} {
		t.Setenv(v, "doc-"+v)
	}
	opts, err := server.ProcessConfigFile(conf)
	if err != nil {
		t.Fatalf("docs/security.md users block: %v", err)
	}
	users := map[string]*server.User{}
	for _, u := range opts.Users {
		users[u.Username] = u
	}
	return users
}

// permString renders permissions for comparison, lists sorted.
func permString(p *server.Permissions) string {
	if p == nil {
		return "<none>"
	}
	list := func(sp *server.SubjectPermission) string {
		if sp == nil {
			return "-"
		}
		a, d := slices.Clone(sp.Allow), slices.Clone(sp.Deny)
		slices.Sort(a)
		slices.Sort(d)
		return "allow " + strings.Join(a, " ") + " deny " + strings.Join(d, " ")
	}
	resp := "-"
	if p.Response != nil {
		resp = strconv.Itoa(p.Response.MaxMsgs) + "/" + p.Response.Expires.String()
	}
	return "publish: " + list(p.Publish) + "\nsubscribe: " + list(p.Subscribe) + "\nresponse: " + resp
}

// The Compose users have exactly the permissions docs/security.md lists
// for each role, and there is no other user in the CONNECTOR account.
func TestComposeNATSPermissionsMatchSecurityDoc(t *testing.T) {
	parsed, _ := composeNATS(t)
	checkPermissionsMatchDoc(t, "compose/nats.conf", parsed)
}

// checkPermissionsMatchDoc compares the users of account CONNECTOR in a
// parsed NATS config with the users block of docs/security.md.
func checkPermissionsMatchDoc(t *testing.T, where string, parsed *server.Options) {
	t.Helper()
	doc := securityDocUsers(t)
	if len(doc) != 3 {
		t.Fatalf("docs/security.md lists %d users, want producer, worker, operator", len(doc))
	}
	seen := 0
	for _, u := range parsed.Users {
		if u.Account == nil || u.Account.Name != "CONNECTOR" {
			continue
		}
		seen++
		want, ok := doc[u.Username]
		if !ok {
			t.Errorf("%s: user %q in account CONNECTOR is not a documented role", where, u.Username)
			continue
		}
		if got, w := permString(u.Permissions), permString(want.Permissions); got != w {
			t.Errorf("%s: user %s: permissions differ from docs/security.md\nconfig:\n%s\ndoc:\n%s", where, u.Username, got, w)
		}
		if u.Permissions == nil || u.Permissions.Subscribe == nil ||
			!slices.Contains(u.Permissions.Subscribe.Allow, "_INBOX_"+u.Username+".>") {
			t.Errorf("%s: user %s may not subscribe to its inbox prefix _INBOX_%s.>", where, u.Username, u.Username)
		}
	}
	if seen != len(doc) {
		t.Errorf("%s: %d users in account CONNECTOR, want %d", where, seen, len(doc))
	}
}

// Each Compose service connects as the role it needs, with that role's
// password file and inbox prefix; the workers do not provision streams.
func TestComposeServiceRoles(t *testing.T) {
	p := loadCompose(t)
	for svc, user := range map[string]string{"provision": "operator", "shop-schedule": "operator", "worker": "worker", "catalog": "producer"} {
		env := serviceEnv(t, p.Services[svc])
		if env["CONNECTOR_NATS_USER"] != user {
			t.Errorf("service %s: CONNECTOR_NATS_USER %q, want %q", svc, env["CONNECTOR_NATS_USER"], user)
		}
		if want := "/run/secrets/nats_" + user + "_password"; env["CONNECTOR_NATS_PASSWORD_FILE"] != want {
			t.Errorf("service %s: CONNECTOR_NATS_PASSWORD_FILE %q, want %q", svc, env["CONNECTOR_NATS_PASSWORD_FILE"], want)
		}
		if want := "_INBOX_" + user; env["CONNECTOR_NATS_INBOX_PREFIX"] != want {
			t.Errorf("service %s: CONNECTOR_NATS_INBOX_PREFIX %q, want %q", svc, env["CONNECTOR_NATS_INBOX_PREFIX"], want)
		}
		if env["CONNECTOR_PREFIX"] != "" && env["CONNECTOR_PREFIX"] != wire.DefaultPrefix {
			t.Errorf("service %s: CONNECTOR_PREFIX %q: compose/nats.conf permissions are for %q", svc, env["CONNECTOR_PREFIX"], wire.DefaultPrefix)
		}
	}
	if env := serviceEnv(t, p.Services["worker"]); env["CONNECTOR_PROVISION"] != "false" {
		t.Errorf("worker: CONNECTOR_PROVISION %q, want false (the worker user may not create streams)", env["CONNECTOR_PROVISION"])
	}
	if env := serviceEnv(t, p.Services["worker"]); env["CONNECTOR_REGISTER_SCHEDULES"] != "false" {
		t.Errorf("worker: CONNECTOR_REGISTER_SCHEDULES %q, want false (the worker user may not register periodic jobs: shop-schedule does)", env["CONNECTOR_REGISTER_SCHEDULES"])
	}
}

// The workers run the example connector (SHOP_URL and CATALOG_URL set, the
// shop and catalog services' ports), and the periodic imports are
// registered by shop-schedule, as the operator, for the shop id the
// workers know.
func TestComposeRunsTheExampleConnector(t *testing.T) {
	p := loadCompose(t)
	w, sched := serviceEnv(t, p.Services["worker"]), serviceEnv(t, p.Services["shop-schedule"])
	for k, want := range map[string]string{"SHOP_URL": "http://shop:8081", "CATALOG_URL": "http://catalog:8082"} {
		if w[k] != want {
			t.Errorf("worker: %s %q, want %q", k, w[k], want)
		}
	}
	if got := serviceEnv(t, p.Services["shop"])["SHOP_ADDR"]; got != ":8081" {
		t.Errorf("shop: SHOP_ADDR %q, want :8081", got)
	}
	if got := serviceEnv(t, p.Services["catalog"])["CATALOG_ADDR"]; got != ":8082" {
		t.Errorf("catalog: CATALOG_ADDR %q, want :8082", got)
	}
	if w["SHOP_ID"] == "" || sched["SHOP_ID"] != w["SHOP_ID"] {
		t.Errorf("SHOP_ID: worker %q, shop-schedule %q: want the same, set", w["SHOP_ID"], sched["SHOP_ID"])
	}
	if sched["SHOP_IMPORT_SCHEDULE"] == "" || sched["SHOP_IMPORT_SCHEDULE"] != w["SHOP_IMPORT_SCHEDULE"] {
		t.Errorf("SHOP_IMPORT_SCHEDULE: worker %q, shop-schedule %q: want the same, set", w["SHOP_IMPORT_SCHEDULE"], sched["SHOP_IMPORT_SCHEDULE"])
	}
	if v := w["SHOP_VERSION"]; v != "v1" && v != "v2" {
		t.Errorf("worker: SHOP_VERSION %q, want v1 or v2", v)
	}
	if got := slices.Collect(maps.Keys(p.Services["shop-schedule"].DependsOn)); !slices.Equal(got, []string{"provision"}) {
		t.Errorf("shop-schedule depends on %v, want the provision service (the jobs stream must exist)", got)
	}
	for _, dep := range []string{"shop", "catalog"} {
		if c := p.Services["worker"].DependsOn[dep].Condition; c != "service_healthy" {
			t.Errorf("worker depends on %s with condition %q, want service_healthy", dep, c)
		}
	}
}

// natsServerModuleVersion returns the major and minor version of
// github.com/nats-io/nats-server/v2 in go.mod: the server the tests run.
func natsServerModuleVersion(t *testing.T) (int, int) {
	t.Helper()
	raw, err := os.ReadFile("../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^\s*github\.com/nats-io/nats-server/v2 v(\d+)\.(\d+)\.`).FindSubmatch(raw)
	if m == nil {
		t.Fatal("go.mod: no github.com/nats-io/nats-server/v2 requirement")
	}
	return atoi(string(m[1])), atoi(string(m[2]))
}

// ---- docker-compose.yml ----

type composeService struct {
	Image           string            `json:"image"`
	Build           any               `json:"build"`
	Command         []string          `json:"command"`
	EnvFile         any               `json:"env_file"`
	Environment     map[string]string `json:"environment"`
	Secrets         []any             `json:"secrets"`
	Volumes         []string          `json:"volumes"`
	Ports           []string          `json:"ports"`
	StopGracePeriod string            `json:"stop_grace_period"`
	Deploy          struct {
		Replicas int `json:"replicas"`
	} `json:"deploy"`
	DependsOn map[string]struct {
		Condition string `json:"condition"`
	} `json:"depends_on"`
}

type composeProject struct {
	Services map[string]composeService `json:"services"`
	Secrets  map[string]struct {
		File string `json:"file"`
	} `json:"secrets"`
}

func loadCompose(t *testing.T) composeProject {
	t.Helper()
	raw, err := os.ReadFile(composeFile)
	if err != nil {
		t.Fatal(err)
	}
	js, err := yaml.YAMLToJSONStrict(raw) // duplicate keys fail
	if err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	var p composeProject
	if err := json.Unmarshal(js, &p); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	return p
}

// readEnvFile reads KEY=VALUE lines.
func readEnvFile(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	env := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: bad line %q", path, line)
		}
		env[k] = v
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return env
}

// serviceEnv returns the environment a service sees: env_file, then
// environment.
func serviceEnv(t *testing.T, s composeService) map[string]string {
	t.Helper()
	env := map[string]string{}
	var files []string
	switch f := s.EnvFile.(type) {
	case string:
		files = []string{f}
	case []any:
		for _, x := range f {
			files = append(files, x.(string))
		}
	}
	for _, f := range files {
		for k, v := range readEnvFile(t, filepath.Join("..", f)) {
			env[k] = v
		}
	}
	for k, v := range s.Environment {
		env[k] = v
	}
	return env
}

func secretNames(s composeService) []string {
	var names []string
	for _, x := range s.Secrets {
		switch v := x.(type) {
		case string:
			names = append(names, v)
		case map[string]any:
			names = append(names, v["source"].(string))
		}
	}
	return names
}

func TestComposeFile(t *testing.T) {
	p := loadCompose(t)
	for _, name := range []string{"nats", "redis", "provision", "shop-schedule", "worker", "shop", "catalog", "otel-collector", "jaeger"} {
		if _, ok := p.Services[name]; !ok {
			t.Errorf("no service %q", name)
		}
	}

	w := p.Services["worker"]
	if w.Deploy.Replicas != 3 {
		t.Errorf("worker replicas %d, want 3", w.Deploy.Replicas)
	}
	if !slices.Equal(w.Command, []string{"connector", "worker"}) {
		t.Errorf("worker command %q", w.Command)
	}
	if got := p.Services["provision"].Command; !slices.Equal(got, []string{"connector", "streams", "provision"}) {
		t.Errorf("provision command %q", got)
	}
	env := serviceEnv(t, w)
	for _, k := range append(requiredConfig, "CONNECTOR_NATS_USER", "CONNECTOR_NATS_PASSWORD_FILE", "OTEL_SERVICE_NAME") {
		if env[k] == "" {
			t.Errorf("worker environment lacks %s", k)
		}
	}
	checkChannels(t, env["CONNECTOR_CHANNELS"])
	grace := shutdownGrace(t, env)
	stop, err := time.ParseDuration(w.StopGracePeriod)
	if err != nil || stop < grace+stopMargin {
		t.Errorf("worker stop_grace_period %q, want at least CONNECTOR_SHUTDOWN_GRACE (%v) + %v", w.StopGracePeriod, grace, stopMargin)
	}

	// NATS: 2.14 or newer (the periodic imports are @every message
	// schedules), the same minor version as the server the tests run,
	// JetStream on, the config file mounted.
	n := p.Services["nats"]
	m := regexp.MustCompile(`^nats:(\d+)\.(\d+)`).FindStringSubmatch(n.Image)
	if m == nil {
		t.Errorf("nats image %q: want nats:MAJOR.MINOR[...]", n.Image)
	} else {
		major, minor := atoi(m[1]), atoi(m[2])
		if major < 2 || major == 2 && minor < 14 {
			t.Errorf("nats image %q: want 2.14 or newer (@every schedules)", n.Image)
		}
		if gm, gn := natsServerModuleVersion(t); major != gm || minor != gn {
			t.Errorf("nats image %q: want %d.%d, the nats-server of go.mod that the tests run", n.Image, gm, gn)
		}
	}
	if !slices.Contains(n.Command, "-js") || !slices.Contains(n.Command, "--config") {
		t.Errorf("nats command %q: want --config and -js", n.Command)
	}

	// Every secret is a git-ignored file under deploy/compose/secrets, and
	// every *_FILE variable points at a secret the service mounts.
	ignore, err := os.ReadFile(filepath.Join(composeDir, "secrets", ".gitignore"))
	if err != nil || !regexp.MustCompile(`(?m)^\*$`).Match(ignore) {
		t.Errorf("compose/secrets/.gitignore must ignore everything (%v)", err)
	}
	for name, s := range p.Secrets {
		if filepath.Dir(filepath.Clean(s.File)) != filepath.Join("deploy", "compose", "secrets") {
			t.Errorf("secret %s: file %q outside deploy/compose/secrets", name, s.File)
		}
	}
	usesSecrets := 0
	for svcName, s := range p.Services {
		mounted := secretNames(s)
		usesSecrets += len(mounted)
		for _, sec := range mounted {
			if _, ok := p.Secrets[sec]; !ok {
				t.Errorf("service %s: secret %q not declared", svcName, sec)
			}
		}
		for k, v := range serviceEnv(t, s) {
			checkNoLiteralSecret(t, "compose "+svcName, k, v)
			if strings.HasSuffix(k, "_FILE") && strings.HasPrefix(v, "/run/secrets/") &&
				!slices.Contains(mounted, strings.TrimPrefix(v, "/run/secrets/")) {
				t.Errorf("service %s: %s=%s but secret %s is not mounted", svcName, k, v, strings.TrimPrefix(v, "/run/secrets/"))
			}
		}
		for _, v := range s.Volumes {
			host, _, _ := strings.Cut(v, ":")
			if strings.HasPrefix(host, "./") {
				if _, err := os.Stat(filepath.Join("..", host)); err != nil {
					t.Errorf("service %s mounts missing %s", svcName, host)
				}
			}
		}
		if slices.Contains([]string{"connector", "shop", "catalog", "shop-schedule"}, firstOr(s.Command)) && s.Build == nil {
			t.Errorf("service %s runs the project image but has no build", svcName)
		}
	}
	if usesSecrets == 0 {
		t.Error("no service uses Docker secrets")
	}
	for _, svc := range []string{"worker", "provision", "catalog", "redis", "nats"} {
		if len(secretNames(p.Services[svc])) == 0 {
			t.Errorf("service %s mounts no secrets", svc)
		}
	}
	if !slices.Contains(p.Services["jaeger"].Ports, "16686:16686") {
		t.Errorf("jaeger ports %v: want the UI on 16686", p.Services["jaeger"].Ports)
	}
}

func atoi(s string) int { n, _ := strconv.Atoi(s); return n }

func firstOr(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[0]
}

// The collector receives OTLP and exports traces to Jaeger over OTLP.
func TestOTelCollectorConfig(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(composeDir, "otel-collector.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Receivers map[string]any `json:"receivers"`
		Exporters map[string]struct {
			Endpoint string `json:"endpoint"`
		} `json:"exporters"`
		Service struct {
			Pipelines map[string]struct {
				Receivers []string `json:"receivers"`
				Exporters []string `json:"exporters"`
			} `json:"pipelines"`
		} `json:"service"`
	}
	if err := yaml.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	traces, ok := cfg.Service.Pipelines["traces"]
	if !ok || !slices.Contains(traces.Receivers, "otlp") {
		t.Fatalf("traces pipeline %+v: want receiver otlp", traces)
	}
	if _, ok := cfg.Receivers["otlp"]; !ok {
		t.Error("no otlp receiver")
	}
	toJaeger := false
	for _, e := range traces.Exporters {
		exp, ok := cfg.Exporters[e]
		if !ok {
			t.Errorf("pipeline exporter %s not defined", e)
		}
		if strings.HasPrefix(e, "otlp") && exp.Endpoint == "jaeger:4317" {
			toJaeger = true
		}
	}
	if !toJaeger {
		t.Error("traces are not exported to jaeger:4317 over OTLP")
	}
	// The connector sends where the collector listens.
	env := readEnvFile(t, filepath.Join(composeDir, "connector.env"))
	if env["OTEL_EXPORTER_OTLP_ENDPOINT"] != "http://otel-collector:4318" {
		t.Errorf("OTEL_EXPORTER_OTLP_ENDPOINT %q", env["OTEL_EXPORTER_OTLP_ENDPOINT"])
	}
}

// The image builds static binaries and runs them as non-root; the commands
// the deployments run are main packages of this module.
func TestDockerfile(t *testing.T) {
	raw, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	df := string(raw)
	froms := regexp.MustCompile(`(?m)^FROM\s+(\S+)`).FindAllStringSubmatch(df, -1)
	if len(froms) < 2 {
		t.Fatalf("want a multi-stage build, found %d FROM", len(froms))
	}
	final := froms[len(froms)-1][1]
	if final != "scratch" && !strings.HasPrefix(final, "gcr.io/distroless/static") {
		t.Errorf("final stage %q: want distroless static or scratch", final)
	}
	users := regexp.MustCompile(`(?m)^USER\s+(\S+)`).FindAllStringSubmatch(df, -1)
	if len(users) == 0 || strings.HasPrefix(users[len(users)-1][1], "0") || strings.HasPrefix(users[len(users)-1][1], "root") {
		t.Errorf("USER %v: want a non-root user in the final stage", users)
	}
	for _, want := range []string{"CGO_ENABLED=0", "./cmd/connector", "./examples/..."} {
		if !strings.Contains(df, want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
	// The build stage's Go is at least the go.mod's.
	gomod, err := os.ReadFile("../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	need := regexp.MustCompile(`(?m)^go (\d+)\.(\d+)`).FindStringSubmatch(string(gomod))
	have := regexp.MustCompile(`(?m)^ARG GO_VERSION=(\d+)\.(\d+)`).FindStringSubmatch(df)
	if need == nil || have == nil {
		t.Errorf("go directive %v, ARG GO_VERSION %v: want both", need, have)
	} else if hm, hn, nm, nn := atoi(have[1]), atoi(have[2]), atoi(need[1]), atoi(need[2]); hm < nm || hm == nm && hn < nn {
		t.Errorf("ARG GO_VERSION=%s.%s is older than go.mod's go %s.%s", have[1], have[2], need[1], need[2])
	}
	ignore, err := os.ReadFile("../.dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(ignore), "**/secrets") || !strings.Contains(string(ignore), ".git") {
		t.Error(".dockerignore must keep .git and secrets out of the build context")
	}

	// Compose commands of the project image come from main packages named
	// like the binary.
	mains := map[string]string{"connector": "../cmd/connector", "shop": "../examples/shop/cmd/shop",
		"catalog": "../examples/catalog/cmd/catalog", "shop-schedule": "../examples/shopconnector/cmd/shop-schedule"}
	seen := map[string]bool{}
	for name, s := range loadCompose(t).Services {
		cmd := firstOr(s.Command)
		if _, ok := mains[cmd]; s.Build != nil && !ok {
			t.Errorf("service %s runs %q from the project image: not a known main package %v", name, cmd, slices.Sorted(maps.Keys(mains)))
		}
		if dir, ok := mains[cmd]; ok && !seen[cmd] {
			seen[cmd] = true
			t.Run(cmd, func(t *testing.T) {
				files, _ := filepath.Glob(filepath.Join(dir, "*.go"))
				if len(files) == 0 {
					t.Skipf("%s has no Go files yet: the image will lack %s", dir, cmd)
				}
				for _, f := range files {
					if b, err := os.ReadFile(f); err == nil && regexp.MustCompile(`(?m)^package main$`).Match(b) {
						return
					}
				}
				t.Errorf("%s is not a main package", dir)
			})
		}
	}
}
