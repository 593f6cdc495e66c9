package deploy_test

import (
	"context"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/connector-go/connector/internal/streams"
	"github.com/connector-go/connector/internal/testenv"
	"github.com/connector-go/connector/internal/wire"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// podImages returns the container images of the pod templates of objs.
func podImages(objs []any) []string {
	var out []string
	add := func(spec corev1.PodSpec) {
		for _, c := range append(spec.InitContainers, spec.Containers...) {
			out = append(out, c.Image)
		}
	}
	for _, o := range objs {
		switch v := o.(type) {
		case *appsv1.Deployment:
			add(v.Spec.Template.Spec)
		case *batchv1.Job:
			add(v.Spec.Template.Spec)
		}
	}
	return out
}

// imageName is an image reference without its tag or digest.
func imageName(ref string) string {
	if i := strings.Index(ref, "@"); i >= 0 {
		ref = ref[:i]
	}
	if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
		ref = ref[:i]
	}
	return ref
}

var (
	kubectlApply  = regexp.MustCompile(`kubectl\b[^\n]*\bapply\b[^\n]*`)
	applyFileFlag = regexp.MustCompile(`(?:^|\s)(?:-f|--filename)[ =](\S+)`)
	applySelector = regexp.MustCompile(`(?:^|\s)(?:-l|--selector)[ =](?:'([^']*)'|"([^"]*)"|(\S+))`)
)

// The documented apply order must run the image that `kustomize edit set
// image` chose. A manifest applied with `kubectl apply -f` is not passed
// through kustomization.yaml: its pods would run the placeholder image
// (connector:dev), and the Job, whose pod template is immutable, would then
// make the final `kubectl apply -k` fail. Objects with an image rewritten
// by the kustomization are applied with -k (a label selector may pick
// some); the selector of the "streams first" step picks the provisioning
// Job and what it needs, and none of the worker objects.
func TestDocumentedApplyOrderUsesKustomizeImages(t *testing.T) {
	m := loadManifests(t)
	k := only[*kustomization](t, m)
	rewritten := map[string]bool{}
	for _, img := range k.Images {
		rewritten[img.Name] = true
	}
	for _, doc := range []string{"../docs/deploy.md", "../README.md"} {
		raw, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		for _, cmd := range kubectlApply.FindAllString(string(raw), -1) {
			for _, f := range applyFileFlag.FindAllStringSubmatch(cmd, -1) {
				path := f[1]
				if !strings.HasPrefix(path, "deploy/kubernetes/") {
					continue
				}
				file := strings.TrimPrefix(path, "deploy/kubernetes/")
				for _, img := range podImages(m.files[file]) {
					if rewritten[imageName(img)] {
						t.Errorf("%s: %q applies %s without kustomize: it would run %s, not the image set in kustomization.yaml (and the Job's immutable pod template would make a later `kubectl apply -k` fail); apply it with -k", doc, strings.TrimSpace(cmd), file, img)
					}
				}
			}
		}
	}

	// The step that provisions the streams before the workers start.
	raw, err := os.ReadFile("../docs/deploy.md")
	if err != nil {
		t.Fatal(err)
	}
	job := only[*batchv1.Job](t, m)
	var provisionStep string
	for _, cmd := range kubectlApply.FindAllString(string(raw), -1) {
		if strings.Contains(cmd, "-k deploy/kubernetes") && applySelector.MatchString(cmd) {
			provisionStep = cmd
		}
	}
	if provisionStep == "" {
		t.Fatal("docs/deploy.md: no `kubectl apply -k deploy/kubernetes -l ...` step that provisions the streams before the workers")
	}
	sm := applySelector.FindStringSubmatch(provisionStep)
	sel, err := labels.Parse(sm[1] + sm[2] + sm[3])
	if err != nil {
		t.Fatalf("%q: selector: %v", provisionStep, err)
	}
	for file, objs := range m.files {
		for _, o := range objs {
			meta, ok := objectMeta(o)
			if !ok {
				continue
			}
			picked := sel.Matches(labels.Set(meta.Labels))
			switch o.(type) {
			case *batchv1.Job, *corev1.ConfigMap, *corev1.ServiceAccount, *corev1.Namespace:
				if !picked && file != "secret.example.yaml" {
					t.Errorf("%q does not apply %s %s, which the provisioning Job needs", provisionStep, file, meta.Name)
				}
			case *appsv1.Deployment:
				if picked {
					t.Errorf("%q applies the worker Deployment %s before the streams exist", provisionStep, meta.Name)
				}
			}
		}
	}
	if !sel.Matches(labels.Set(job.Spec.Template.Labels)) && !sel.Matches(labels.Set(job.Labels)) {
		t.Errorf("%q does not select the provisioning Job", provisionStep)
	}
}

// The `nats` CLI command docs/deploy.md gives for reaching the Compose NATS
// from the host works with the users of compose/nats.conf: each role may
// receive replies only on its own inbox prefix, so the command must pass
// that role's --inbox-prefix (the CLI's default, _INBOX, is refused).
func TestDocumentedNATSCLICommandIsAllowed(t *testing.T) {
	raw, err := os.ReadFile("../docs/deploy.md")
	if err != nil {
		t.Fatal(err)
	}
	cmd := regexp.MustCompile("`(nats --server nats://localhost:14222 [^`]*)`").FindStringSubmatch(string(raw))
	if cmd == nil {
		t.Fatal("docs/deploy.md: no `nats --server nats://localhost:14222 ...` command")
	}
	flagValue := func(name string) string {
		m := regexp.MustCompile(`--` + name + `[ =](\S+)`).FindStringSubmatch(cmd[1])
		if m == nil {
			return ""
		}
		return m[1]
	}
	user, inbox := flagValue("user"), flagValue("inbox-prefix")
	if inbox == "" {
		inbox = nats.InboxPrefix[:len(nats.InboxPrefix)-1] // the CLI's default, _INBOX
	}
	if !strings.HasSuffix(cmd[1], "stream ls") {
		t.Fatalf("%q: this test knows `stream ls` only", cmd[1])
	}

	parsed, secrets := composeNATS(t)
	srv := testenv.StartNATS(t, func(o *server.Options) {
		o.Accounts, o.Users, o.SystemAccount = parsed.Accounts, parsed.Users, parsed.SystemAccount
	})
	operatorPW := readSecret(t, secrets, "nats_operator_password")
	if err := streams.Ensure(context.Background(), mustJS(t, srv.Connect(t, nats.UserInfo("operator", operatorPW), nats.CustomInboxPrefix("_INBOX_operator"))), streams.Config{Names: wire.MustNames(wire.DefaultPrefix)}); err != nil {
		t.Fatalf("provision: %v", err)
	}
	pw := readSecret(t, secrets, "nats_"+user+"_password")
	nc := srv.Connect(t, nats.UserInfo(user, pw), nats.CustomInboxPrefix(inbox))
	js := mustJS(t, nc)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	names := js.StreamNames(ctx)
	var got []string
	for n := range names.Name() {
		got = append(got, n)
	}
	if err := names.Err(); err != nil || len(got) != 3 {
		t.Errorf("%q: as user %q with inbox prefix %q, the stream list fails (%v, %v): add --inbox-prefix _INBOX_%s", cmd[1], user, inbox, got, err, user)
	}
}

func mustJS(t *testing.T, nc *nats.Conn) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}
