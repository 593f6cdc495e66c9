package deploy_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/connector-go/connector/internal/channels"
	"github.com/connector-go/connector/internal/wire"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"
)

const k8sDir = "kubernetes"

// scaledObject mirrors the fields of KEDA's v2 ScaledObject
// (keda.sh/v1alpha1) that a manifest may use, so that a misspelt field fails
// to decode as it would fail KEDA's CRD validation.
type scaledObject struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              scaledObjectSpec `json:"spec"`
}

type scaledObjectSpec struct {
	ScaleTargetRef        *scaleTarget    `json:"scaleTargetRef"`
	PollingInterval       *int32          `json:"pollingInterval,omitempty"`
	InitialCooldownPeriod *int32          `json:"initialCooldownPeriod,omitempty"`
	CooldownPeriod        *int32          `json:"cooldownPeriod,omitempty"`
	IdleReplicaCount      *int32          `json:"idleReplicaCount,omitempty"`
	MinReplicaCount       *int32          `json:"minReplicaCount,omitempty"`
	MaxReplicaCount       *int32          `json:"maxReplicaCount,omitempty"`
	Advanced              *advancedConfig `json:"advanced,omitempty"`
	Triggers              []scaleTrigger  `json:"triggers"`
	Fallback              *fallbackConfig `json:"fallback,omitempty"`
}

type scaleTarget struct {
	Name                   string `json:"name"`
	APIVersion             string `json:"apiVersion,omitempty"`
	Kind                   string `json:"kind,omitempty"`
	EnvSourceContainerName string `json:"envSourceContainerName,omitempty"`
}

type advancedConfig struct {
	HorizontalPodAutoscalerConfig *struct {
		Name     string                                         `json:"name,omitempty"`
		Behavior *autoscalingv2.HorizontalPodAutoscalerBehavior `json:"behavior,omitempty"`
	} `json:"horizontalPodAutoscalerConfig,omitempty"`
	RestoreToOriginalReplicaCount bool             `json:"restoreToOriginalReplicaCount,omitempty"`
	ScalingModifiers              *json.RawMessage `json:"scalingModifiers,omitempty"`
}

type fallbackConfig struct {
	FailureThreshold int32  `json:"failureThreshold"`
	Replicas         int32  `json:"replicas"`
	Behavior         string `json:"behavior,omitempty"`
}

type scaleTrigger struct {
	Type              string            `json:"type"`
	Name              string            `json:"name,omitempty"`
	UseCachedMetrics  bool              `json:"useCachedMetrics,omitempty"`
	Metadata          map[string]string `json:"metadata"` // KEDA wants strings, not YAML numbers
	MetricType        string            `json:"metricType,omitempty"`
	AuthenticationRef *struct {
		Name string `json:"name"`
		Kind string `json:"kind,omitempty"`
	} `json:"authenticationRef,omitempty"`
}

// kustomization mirrors the kustomize fields the manifests use.
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Namespace  string   `json:"namespace,omitempty"`
	Resources  []string `json:"resources"`
	Images     []struct {
		Name    string `json:"name"`
		NewName string `json:"newName,omitempty"`
		NewTag  string `json:"newTag,omitempty"`
		Digest  string `json:"digest,omitempty"`
	} `json:"images,omitempty"`
}

// newObject returns an empty value of the Go type for apiVersion/kind.

// stopMargin is what a stopping worker may take past its shutdown grace:
// 3 s for handlers that ignore their cancelled context (worker.stuckWait),
// then closing, up to 20 s (the job records' last flush, 5 s; the NATS
// drain, 10 s; telemetry's, 5 s). Whoever stops it waits this much longer
// than the grace before SIGKILL.
const stopMargin = 23 * time.Second

func newObject(apiVersion, kind string) (any, bool) {
	switch apiVersion + "/" + kind {
	case "v1/Namespace":
		return &corev1.Namespace{}, true
	case "v1/ConfigMap":
		return &corev1.ConfigMap{}, true
	case "v1/Secret":
		return &corev1.Secret{}, true
	case "v1/Service":
		return &corev1.Service{}, true
	case "v1/ServiceAccount":
		return &corev1.ServiceAccount{}, true
	case "apps/v1/Deployment":
		return &appsv1.Deployment{}, true
	case "batch/v1/Job":
		return &batchv1.Job{}, true
	case "policy/v1/PodDisruptionBudget":
		return &policyv1.PodDisruptionBudget{}, true
	case "keda.sh/v1alpha1/ScaledObject":
		return &scaledObject{}, true
	case "kustomize.config.k8s.io/v1beta1/Kustomization":
		return &kustomization{}, true
	}
	return nil, false
}

// decodeStrict decodes one YAML document into the Go type its
// apiVersion/kind names, failing on unknown or duplicate fields.
func decodeStrict(doc []byte) (any, error) {
	js, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return nil, err
	}
	var tm metav1.TypeMeta
	if err := json.Unmarshal(js, &tm); err != nil {
		return nil, err
	}
	obj, ok := newObject(tm.APIVersion, tm.Kind)
	if !ok {
		return nil, fmt.Errorf("no Go type known for apiVersion %q kind %q: add it to newObject", tm.APIVersion, tm.Kind)
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	if err := dec.Decode(obj); err != nil {
		return nil, fmt.Errorf("%s %s: %w", tm.APIVersion, tm.Kind, err)
	}
	return obj, nil
}

var docSeparator = regexp.MustCompile(`(?m)^---\s*$`)

// manifests holds every decoded object, by file.
type manifests struct {
	files map[string][]any
}

func loadManifests(t *testing.T) *manifests {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(k8sDir, "*.yaml"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no manifests in %s (%v)", k8sDir, err)
	}
	m := &manifests{files: map[string][]any{}}
	for _, p := range paths {
		raw, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range docSeparator.Split(string(raw), -1) {
			if strings.TrimSpace(stripComments(doc)) == "" {
				continue
			}
			obj, err := decodeStrict([]byte(doc))
			if err != nil {
				t.Errorf("%s document %d: %v", p, i, err)
				continue
			}
			m.files[filepath.Base(p)] = append(m.files[filepath.Base(p)], obj)
		}
	}
	return m
}

func stripComments(doc string) string {
	var b strings.Builder
	for _, l := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

// only returns the single object of type T in the manifests.
func only[T any](t *testing.T, m *manifests) T {
	t.Helper()
	var found []T
	for _, objs := range m.files {
		for _, o := range objs {
			if v, ok := o.(T); ok {
				found = append(found, v)
			}
		}
	}
	if len(found) != 1 {
		var zero T
		t.Fatalf("want exactly one %T, found %d", zero, len(found))
	}
	return found[0]
}

// The decoder itself must reject misspelt and duplicate fields, or the
// other tests prove nothing.
func TestStrictDecoderRejectsMistakes(t *testing.T) {
	for name, doc := range map[string]string{
		"misspelt field": "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  replica: 3\n",
		"misspelt probe": "apiVersion: batch/v1\nkind: Job\nmetadata: {name: x}\nspec:\n  template:\n    spec:\n      containers:\n        - name: a\n          livenessProbes: {}\n",
		"duplicate key":  "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: {a: b, a: c}\n",
		"wrong type":     "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: {a: 1}\n",
		"keda typo":      "apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata: {name: x}\nspec:\n  minReplicas: 1\n",
		"keda misplaced": "apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata: {name: x}\nspec:\n  scalingModifiers: {formula: x}\n",
		"keda number":    "apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata: {name: x}\nspec:\n  triggers: [{type: t, metadata: {lagThreshold: 10}}]\n",
		"unknown kind":   "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\n",
	} {
		if _, err := decodeStrict([]byte(doc)); err == nil {
			t.Errorf("%s: decoded without error", name)
		}
	}
	if _, err := decodeStrict([]byte("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  replicas: 3\n")); err != nil {
		t.Errorf("valid document: %v", err)
	}
}

func TestManifestsDecodeStrictly(t *testing.T) {
	m := loadManifests(t)
	if t.Failed() {
		return
	}
	kinds := map[string]bool{}
	for file, objs := range m.files {
		for _, o := range objs {
			kinds[fmt.Sprintf("%T", o)] = true
			if meta, ok := objectMeta(o); ok && file != "kustomization.yaml" {
				if meta.Name == "" {
					t.Errorf("%s: %T without a name", file, o)
				}
				if _, isNS := o.(*corev1.Namespace); !isNS && meta.Namespace != "connector" {
					t.Errorf("%s: %s in namespace %q, want connector", file, meta.Name, meta.Namespace)
				}
			}
		}
	}
	for _, k := range []string{"*v1.Namespace", "*v1.ConfigMap", "*v1.Secret", "*v1.Deployment", "*v1.Service",
		"*v1.PodDisruptionBudget", "*v1.Job", "*deploy_test.scaledObject", "*deploy_test.kustomization"} {
		if !kinds[k] {
			t.Errorf("no %s among the manifests", k)
		}
	}
}

func objectMeta(o any) (metav1.ObjectMeta, bool) {
	switch v := o.(type) {
	case *corev1.Namespace:
		return v.ObjectMeta, true
	case *corev1.ConfigMap:
		return v.ObjectMeta, true
	case *corev1.Secret:
		return v.ObjectMeta, true
	case *corev1.Service:
		return v.ObjectMeta, true
	case *corev1.ServiceAccount:
		return v.ObjectMeta, true
	case *appsv1.Deployment:
		return v.ObjectMeta, true
	case *batchv1.Job:
		return v.ObjectMeta, true
	case *policyv1.PodDisruptionBudget:
		return v.ObjectMeta, true
	case *scaledObject:
		return v.ObjectMeta, true
	}
	return metav1.ObjectMeta{}, false
}

func configData(t *testing.T, m *manifests) map[string]string {
	t.Helper()
	return only[*corev1.ConfigMap](t, m).Data
}

func shutdownGrace(t *testing.T, env map[string]string) time.Duration {
	t.Helper()
	d, err := time.ParseDuration(env["CONNECTOR_SHUTDOWN_GRACE"])
	if err != nil || d <= 0 {
		t.Fatalf("CONNECTOR_SHUTDOWN_GRACE %q: %v", env["CONNECTOR_SHUTDOWN_GRACE"], err)
	}
	return d
}

func TestWorkerDeployment(t *testing.T) {
	m := loadManifests(t)
	d := only[*appsv1.Deployment](t, m)
	cfg := configData(t, m)
	spec := d.Spec.Template.Spec

	if d.Spec.Replicas == nil || *d.Spec.Replicas != 3 {
		t.Errorf("replicas %v, want 3", d.Spec.Replicas)
	}
	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil || !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
		t.Errorf("selector %v does not match the pod labels %v (%v)", d.Spec.Selector, d.Spec.Template.Labels, err)
	}

	// The kubelet must wait longer than the worker's own shutdown grace.
	grace := shutdownGrace(t, cfg)
	if tgp := spec.TerminationGracePeriodSeconds; tgp == nil || time.Duration(*tgp)*time.Second < grace+stopMargin {
		t.Errorf("terminationGracePeriodSeconds %v, want at least CONNECTOR_SHUTDOWN_GRACE (%v) + %v", tgp, grace, stopMargin)
	}

	if len(spec.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(spec.Containers))
	}
	c := spec.Containers[0]
	if got := append(slices.Clone(c.Command), c.Args...); !slices.Equal(got, []string{"connector", "worker"}) {
		t.Errorf("command %q, want connector worker", got)
	}
	httpAddr := cfg["CONNECTOR_HTTP_ADDR"]
	if !strings.HasSuffix(httpAddr, ":8080") {
		t.Errorf("CONNECTOR_HTTP_ADDR %q, want port 8080", httpAddr)
	}
	checkProbe(t, "liveness", c.LivenessProbe, c, "/livez")
	checkProbe(t, "readiness", c.ReadinessProbe, c, "/readyz")
	if c.StartupProbe != nil {
		checkProbe(t, "startup", c.StartupProbe, c, "/livez")
	}

	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Errorf("resources %+v: want cpu and memory requests and a memory limit", c.Resources)
	}

	checkConfigFrom(t, "worker", c)
	checkSecretFiles(t, m, cfg, c, spec)
}

// Each pod connects to NATS as its role of docs/security.md, a user of the
// production NATS config, with that role's reply-subject prefix, and mounts
// only its role's Secret: a worker pod never holds the operator's password.
// The workers do not provision streams (their user may not).
func TestKubernetesRoles(t *testing.T) {
	m := loadManifests(t)
	cfg := configData(t, m)
	if cfg["CONNECTOR_PREFIX"] != wire.DefaultPrefix {
		t.Errorf("CONNECTOR_PREFIX %q: the permissions of nats/nats-server.conf are written for %q", cfg["CONNECTOR_PREFIX"], wire.DefaultPrefix)
	}
	for _, k := range []string{"CONNECTOR_NATS_USER", "CONNECTOR_NATS_INBOX_PREFIX", "CONNECTOR_PROVISION", "CONNECTOR_REGISTER_SCHEDULES"} {
		if _, ok := cfg[k]; ok {
			t.Errorf("ConfigMap sets %s, which differs per role: set it in the pod specs", k)
		}
	}
	users := map[string]bool{}
	for _, u := range parseProductionNATS(t, "").Users {
		if u.Account != nil && u.Account.Name == "CONNECTOR" {
			users[u.Username] = true
		}
	}
	d := only[*appsv1.Deployment](t, m)
	job := only[*batchv1.Job](t, m)
	pods := []struct {
		who, user, secret string
		spec              corev1.PodSpec
	}{
		{"worker", "worker", "connector-worker-secrets", d.Spec.Template.Spec},
		{"provision", "operator", "connector-operator-secrets", job.Spec.Template.Spec},
	}
	for _, p := range pods {
		if len(p.spec.Containers) != 1 {
			t.Fatalf("%s: %d containers", p.who, len(p.spec.Containers))
		}
		c := p.spec.Containers[0]
		env := podEnv(cfg, c)
		if env["CONNECTOR_NATS_USER"] != p.user || !users[p.user] {
			t.Errorf("%s: CONNECTOR_NATS_USER %q, want %q, a user of account CONNECTOR in nats/nats-server.conf (%v)", p.who, env["CONNECTOR_NATS_USER"], p.user, users)
		}
		if want := "_INBOX_" + p.user; env["CONNECTOR_NATS_INBOX_PREFIX"] != want {
			t.Errorf("%s: CONNECTOR_NATS_INBOX_PREFIX %q, want %q", p.who, env["CONNECTOR_NATS_INBOX_PREFIX"], want)
		}
		if got := checkSecretFiles(t, m, cfg, c, p.spec); !slices.Equal(got, []string{p.secret}) {
			t.Errorf("%s: mounts Secrets %v, want only %s", p.who, got, p.secret)
		}
	}
	if env := podEnv(cfg, d.Spec.Template.Spec.Containers[0]); env["CONNECTOR_PROVISION"] != "false" {
		t.Errorf("worker: CONNECTOR_PROVISION %q, want false (the worker user may not create streams)", env["CONNECTOR_PROVISION"])
	}
	if env := podEnv(cfg, d.Spec.Template.Spec.Containers[0]); env["CONNECTOR_REGISTER_SCHEDULES"] != "false" {
		t.Errorf("worker: CONNECTOR_REGISTER_SCHEDULES %q, want false (the worker user may not register periodic jobs)", env["CONNECTOR_REGISTER_SCHEDULES"])
	}
	if n := len(secretsByName(m)); n != len(pods) {
		t.Errorf("secret.example.yaml describes %d Secrets, want one per role (%d)", n, len(pods))
	}
}

func checkProbe(t *testing.T, name string, p *corev1.Probe, c corev1.Container, path string) {
	t.Helper()
	if p == nil || p.HTTPGet == nil {
		t.Errorf("%s probe: want an httpGet probe on %s", name, path)
		return
	}
	if p.HTTPGet.Path != path {
		t.Errorf("%s probe path %q, want %q", name, p.HTTPGet.Path, path)
	}
	port := p.HTTPGet.Port.IntValue()
	if name := p.HTTPGet.Port.StrVal; name != "" {
		port = 0
		for _, cp := range c.Ports {
			if cp.Name == name {
				port = int(cp.ContainerPort)
			}
		}
	}
	if port != 8080 {
		t.Errorf("%s probe port %v resolves to %d, want 8080", name, p.HTTPGet.Port.String(), port)
	}
}

// checkConfigFrom checks that a container reads the ConfigMap.
func checkConfigFrom(t *testing.T, who string, c corev1.Container) {
	t.Helper()
	for _, ef := range c.EnvFrom {
		if ef.ConfigMapRef != nil && ef.ConfigMapRef.Name == "connector-config" {
			return
		}
	}
	t.Errorf("%s: container %s does not read ConfigMap connector-config (envFrom)", who, c.Name)
}

// secretsByName returns the Secrets of the manifests (the template) by name.
func secretsByName(m *manifests) map[string]*corev1.Secret {
	out := map[string]*corev1.Secret{}
	for _, objs := range m.files {
		for _, o := range objs {
			if s, ok := o.(*corev1.Secret); ok {
				out[s.Name] = s
			}
		}
	}
	return out
}

// podEnv is what a container sees: the ConfigMap (envFrom), then its own
// literal env entries, which win.
func podEnv(cfg map[string]string, c corev1.Container) map[string]string {
	env := maps.Clone(cfg)
	for _, e := range c.Env {
		if e.ValueFrom == nil {
			env[e.Name] = e.Value
		}
	}
	return env
}

// secretMounts returns the Secrets a container mounts: mount path -> Secret
// name.
func secretMounts(c corev1.Container, spec corev1.PodSpec) map[string]string {
	volumes := map[string]corev1.Volume{}
	for _, v := range spec.Volumes {
		volumes[v.Name] = v
	}
	out := map[string]string{}
	for _, vm := range c.VolumeMounts {
		if v := volumes[vm.Name]; v.Secret != nil {
			out[vm.MountPath] = v.Secret.SecretName
		}
	}
	return out
}

// checkSecretFiles checks that every *_FILE path a container reads (from
// the ConfigMap or its own env) is a key of a Secret of the template,
// mounted read-only with owner/group-only permissions, and returns the
// names of the Secrets mounted.
func checkSecretFiles(t *testing.T, m *manifests, cfg map[string]string, c corev1.Container, spec corev1.PodSpec) []string {
	t.Helper()
	secrets := secretsByName(m)
	mounts := secretMounts(c, spec)
	for _, v := range spec.Volumes {
		if v.Secret == nil {
			continue
		}
		if secrets[v.Secret.SecretName] == nil {
			t.Errorf("container %s: volume %s mounts Secret %q, which secret.example.yaml does not describe", c.Name, v.Name, v.Secret.SecretName)
		}
		if m := v.Secret.DefaultMode; m == nil || *m != 0o400 && *m != 0o440 {
			t.Errorf("secret volume %s: defaultMode %v, want 0400 or 0440 (owner and fsGroup only)", v.Name, v.Secret.DefaultMode)
		}
	}
	for _, vm := range c.VolumeMounts {
		if _, isSecret := mounts[vm.MountPath]; isSecret && !vm.ReadOnly {
			t.Errorf("container %s: Secret mount %s is not readOnly", c.Name, vm.MountPath)
		}
	}
	for k, path := range podEnv(cfg, c) {
		if !strings.HasSuffix(k, "_FILE") && k != "CONNECTOR_NATS_CREDS" && k != "CONNECTOR_NATS_NKEY" {
			continue
		}
		name, ok := mounts[filepath.Dir(path)]
		if !ok {
			t.Errorf("%s=%s: not under a Secret mount in container %s", k, path, c.Name)
			continue
		}
		if s := secrets[name]; s != nil {
			if _, ok := s.StringData[filepath.Base(path)]; !ok {
				t.Errorf("%s=%s: no key %q in Secret %s", k, path, filepath.Base(path), name)
			}
		}
	}
	return slices.Sorted(maps.Values(mounts))
}

var secretName = regexp.MustCompile(`(?i)PASSWORD|TOKEN|SECRET|CREDS|PRIVATE|API_?KEY`)

// checkNoLiteralSecret fails when a variable that names a secret carries a
// literal value: it must name a file (_FILE, _CREDS: an absolute path) or
// come from a Secret. URLs must not embed passwords either.
func checkNoLiteralSecret(t *testing.T, where, name, value string) {
	t.Helper()
	if u, err := url.Parse(value); err == nil && u.User != nil {
		if _, has := u.User.Password(); has {
			t.Errorf("%s: %s embeds a password in a URL", where, name)
		}
	}
	if !secretName.MatchString(name) {
		return
	}
	if strings.HasSuffix(name, "_FILE") || strings.HasSuffix(name, "_CREDS") {
		if !strings.HasPrefix(value, "/") {
			t.Errorf("%s: %s=%q should be an absolute file path", where, name, value)
		}
		return
	}
	if value != "" {
		t.Errorf("%s: %s has a literal value: use a _FILE variable or a secretKeyRef", where, name)
	}
}

func TestNoLiteralSecrets(t *testing.T) {
	m := loadManifests(t)
	for k, v := range configData(t, m) {
		checkNoLiteralSecret(t, "ConfigMap", k, v)
	}
	var pods []struct {
		where string
		spec  corev1.PodSpec
	}
	for file, objs := range m.files {
		for _, o := range objs {
			switch v := o.(type) {
			case *appsv1.Deployment:
				pods = append(pods, struct {
					where string
					spec  corev1.PodSpec
				}{file, v.Spec.Template.Spec})
			case *batchv1.Job:
				pods = append(pods, struct {
					where string
					spec  corev1.PodSpec
				}{file, v.Spec.Template.Spec})
			case *corev1.Secret:
				// The only Secret is a template: placeholders, and not applied.
				if file != "secret.example.yaml" {
					t.Errorf("%s: a Secret outside secret.example.yaml", file)
				}
				if len(v.Data) != 0 {
					t.Errorf("%s: base64 data in the Secret template", file)
				}
				for k, val := range v.StringData {
					if !strings.Contains(val, "PLACEHOLDER") {
						t.Errorf("%s: key %s is not a PLACEHOLDER value", file, k)
					}
				}
			}
		}
	}
	if len(pods) < 2 {
		t.Fatalf("found %d pod templates, want the worker and the provisioning job", len(pods))
	}
	for _, p := range pods {
		for _, c := range p.spec.Containers {
			for _, e := range c.Env {
				if e.ValueFrom != nil {
					continue // secretKeyRef, fieldRef, resourceFieldRef
				}
				checkNoLiteralSecret(t, p.where+"/"+c.Name, e.Name, e.Value)
			}
		}
	}
}

// Every pod template meets the Pod Security "restricted" profile the
// namespace enforces, and mounts no service account token.
func TestPodSecurityRestricted(t *testing.T) {
	m := loadManifests(t)
	ns := only[*corev1.Namespace](t, m)
	if ns.Labels["pod-security.kubernetes.io/enforce"] != "restricted" {
		t.Errorf("namespace %s does not enforce the restricted Pod Security profile", ns.Name)
	}
	specs := map[string]corev1.PodSpec{
		"worker":    only[*appsv1.Deployment](t, m).Spec.Template.Spec,
		"provision": only[*batchv1.Job](t, m).Spec.Template.Spec,
	}
	for who, spec := range specs {
		psc := spec.SecurityContext
		if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser == 0 {
			t.Errorf("%s: pod securityContext %+v: want runAsNonRoot and a non-zero runAsUser", who, psc)
		}
		if psc == nil || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
			t.Errorf("%s: want seccompProfile RuntimeDefault", who)
		}
		if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
			t.Errorf("%s: set automountServiceAccountToken: false (no API access needed)", who)
		}
		for _, c := range spec.Containers {
			sc := c.SecurityContext
			if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
				sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
				sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) != 0 {
				t.Errorf("%s/%s: securityContext %+v: want read-only root fs, no privilege escalation, drop ALL", who, c.Name, sc)
			}
			if c.Resources.Limits.Memory().IsZero() || c.Resources.Requests.Memory().IsZero() {
				t.Errorf("%s/%s: want memory request and limit", who, c.Name)
			}
		}
	}
}

func TestMetricsServiceAndPDB(t *testing.T) {
	m := loadManifests(t)
	d := only[*appsv1.Deployment](t, m)
	svc := only[*corev1.Service](t, m)
	pods := labels.Set(d.Spec.Template.Labels)

	for k, v := range svc.Spec.Selector {
		if pods[k] != v {
			t.Errorf("service selector %s=%s does not match the worker pods", k, v)
		}
	}
	if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Port != 8080 {
		t.Errorf("service ports %+v, want 8080", svc.Spec.Ports)
	}
	want := map[string]string{"prometheus.io/scrape": "true", "prometheus.io/port": "8080", "prometheus.io/path": "/metrics"}
	for k, v := range want {
		if svc.Annotations[k] != v {
			t.Errorf("service annotation %s=%q, want %q", k, svc.Annotations[k], v)
		}
	}

	pdb := only[*policyv1.PodDisruptionBudget](t, m)
	sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
	if err != nil || !sel.Matches(pods) {
		t.Errorf("PDB selector %v does not match the worker pods (%v)", pdb.Spec.Selector, err)
	}
	maxU, minA := pdb.Spec.MaxUnavailable, pdb.Spec.MinAvailable
	if (maxU == nil) == (minA == nil) {
		t.Fatal("PDB: want exactly one of maxUnavailable and minAvailable")
	}
	if maxU != nil && maxU.IntValue() != 1 || minA != nil && (minA.IntValue() < 1 || minA.IntValue() >= int(*d.Spec.Replicas)) {
		t.Errorf("PDB maxUnavailable %v minAvailable %v: want 1 of %d", maxU, minA, *d.Spec.Replicas)
	}
}

var kedaJetStreamKeys = []string{"natsServerMonitoringEndpoint", "account", "stream", "consumer", "lagThreshold", "activationLagThreshold", "useHttps"}

func TestKEDAScaledObject(t *testing.T) {
	m := loadManifests(t)
	d := only[*appsv1.Deployment](t, m)
	so := only[*scaledObject](t, m)
	cfg := configData(t, m)

	if so.Spec.ScaleTargetRef == nil || so.Spec.ScaleTargetRef.Name != d.Name {
		t.Errorf("scaleTargetRef %+v, want %s", so.Spec.ScaleTargetRef, d.Name)
	}
	if so.Spec.MinReplicaCount == nil || *so.Spec.MinReplicaCount != *d.Spec.Replicas {
		t.Errorf("minReplicaCount %v, want the Deployment's replicas %d", so.Spec.MinReplicaCount, *d.Spec.Replicas)
	}
	if so.Spec.MaxReplicaCount == nil || *so.Spec.MaxReplicaCount < *d.Spec.Replicas {
		t.Errorf("maxReplicaCount %v below the Deployment's replicas", so.Spec.MaxReplicaCount)
	}
	if len(so.Spec.Triggers) == 0 {
		t.Fatalf("no triggers")
	}
	// Every trigger names a consumer the workers create for the ConfigMap's
	// channels (jobs~<channel>~<band>, or ~seq for a sequential channel).
	chans, err := channels.Parse(cfg["CONNECTOR_CHANNELS"])
	if err != nil {
		t.Fatalf("CONNECTOR_CHANNELS: %v", err)
	}
	names := wire.MustNames(cfg["CONNECTOR_PREFIX"])
	consumers := map[string]bool{}
	for _, ch := range chans.All() {
		if ch.Sequential {
			consumers[names.JobsConsumer(ch.Name, -1)] = true
			continue
		}
		for b := 0; b < channels.Bands; b++ {
			consumers[names.JobsConsumer(ch.Name, b)] = true
		}
	}
	for i, tr := range so.Spec.Triggers {
		if tr.Type != "nats-jetstream" {
			t.Fatalf("trigger %d type %q, want nats-jetstream", i, tr.Type)
		}
		if !consumers[tr.Metadata["consumer"]] {
			t.Errorf("trigger %d: consumer %q is not one the workers create (%v)", i, tr.Metadata["consumer"], consumers)
		}
	}
	opts := parseProductionNATS(t, "")
	seen := map[string]bool{}
	for i, tr := range so.Spec.Triggers {
		md := tr.Metadata
		if seen[md["consumer"]] {
			t.Errorf("trigger %d: consumer %q listed twice", i, md["consumer"])
		}
		seen[md["consumer"]] = true
		for k := range md {
			if !slices.Contains(kedaJetStreamKeys, k) {
				t.Errorf("trigger %d: metadata %q is not a nats-jetstream parameter (%v)", i, k, kedaJetStreamKeys)
			}
		}
		for _, k := range []string{"natsServerMonitoringEndpoint", "account", "stream", "consumer", "lagThreshold"} {
			if md[k] == "" {
				t.Errorf("trigger %d: metadata %s missing", i, k)
			}
		}
		for _, k := range []string{"lagThreshold", "activationLagThreshold"} {
			if v, ok := md[k]; ok {
				if n, err := strconv.Atoi(v); err != nil || n < 0 || k == "lagThreshold" && n == 0 {
					t.Errorf("trigger %d: %s %q: want a positive integer", i, k, v)
				}
			}
		}
		if v, ok := md["useHttps"]; ok && v != "true" && v != "false" {
			t.Errorf("trigger %d: useHttps %q: want \"true\" or \"false\"", i, v)
		}
		if want := strings.ToUpper(cfg["CONNECTOR_PREFIX"]) + "_JOBS"; md["stream"] != want {
			t.Errorf("trigger %d: stream %q, want %q (from CONNECTOR_PREFIX %q)", i, md["stream"], want, cfg["CONNECTOR_PREFIX"])
		}
		if ep := md["natsServerMonitoringEndpoint"]; strings.Contains(ep, "://") || !strings.HasSuffix(ep, ":8222") {
			t.Errorf("trigger %d: natsServerMonitoringEndpoint %q: want host:8222 without a scheme", i, ep)
		}
		// The account must exist in the production NATS config.
		found := md["account"] == "$G"
		for _, a := range opts.Accounts {
			found = found || a.Name == md["account"]
		}
		if !found {
			t.Errorf("trigger %d: account %q is not an account of nats/nats-server.conf", i, md["account"])
		}
	}
}

func TestProvisionJob(t *testing.T) {
	m := loadManifests(t)
	job := only[*batchv1.Job](t, m)
	cfg := configData(t, m)
	spec := job.Spec.Template.Spec
	if p := spec.RestartPolicy; p != corev1.RestartPolicyOnFailure && p != corev1.RestartPolicyNever {
		t.Errorf("restartPolicy %q", p)
	}
	if len(spec.Containers) != 1 {
		t.Fatalf("%d containers", len(spec.Containers))
	}
	c := spec.Containers[0]
	if got := append(slices.Clone(c.Command), c.Args...); !slices.Equal(got, []string{"connector", "streams", "provision"}) {
		t.Errorf("command %q, want connector streams provision", got)
	}
	replicas := cfg["CONNECTOR_STREAM_REPLICAS"]
	for _, e := range c.Env {
		if e.Name == "CONNECTOR_STREAM_REPLICAS" {
			replicas = e.Value
		}
	}
	if replicas != "3" {
		t.Errorf("CONNECTOR_STREAM_REPLICAS %q for the production job, want 3 (R3)", replicas)
	}
	if c.SecurityContext == nil || c.SecurityContext.ReadOnlyRootFilesystem == nil || !*c.SecurityContext.ReadOnlyRootFilesystem {
		t.Error("provision container: want a read-only root filesystem")
	}
	checkConfigFrom(t, "provision", c)
	checkSecretFiles(t, m, cfg, c, spec)
}

func TestKustomizationListsTheManifests(t *testing.T) {
	m := loadManifests(t)
	k := only[*kustomization](t, m)
	var want []string
	for file := range m.files {
		if file != "kustomization.yaml" && file != "secret.example.yaml" {
			want = append(want, file)
		}
	}
	got := slices.Clone(k.Resources)
	sort.Strings(want)
	sort.Strings(got)
	if !slices.Equal(got, want) {
		t.Errorf("kustomization resources %v, want %v (the Secret template stays out)", got, want)
	}
	if k.Namespace != "connector" {
		t.Errorf("kustomization namespace %q", k.Namespace)
	}
}

// The config keys every connector process reads are set both in Compose and
// in Kubernetes.
var requiredConfig = []string{
	"CONNECTOR_NATS_URL", "CONNECTOR_REDIS_URL", "CONNECTOR_REDIS_PASSWORD_FILE", "CONNECTOR_PREFIX",
	"CONNECTOR_STREAM_REPLICAS", "CONNECTOR_CHANNELS", "CONNECTOR_HTTP_ADDR", "CONNECTOR_LOG_FORMAT",
	"CONNECTOR_LOG_LEVEL", "CONNECTOR_SHUTDOWN_GRACE", "OTEL_EXPORTER_OTLP_ENDPOINT",
}

func TestConfigMapHasEveryKey(t *testing.T) {
	cfg := configData(t, loadManifests(t))
	for _, k := range append(requiredConfig, "CONNECTOR_NATS_PASSWORD_FILE") {
		if cfg[k] == "" {
			t.Errorf("ConfigMap lacks %s", k)
		}
	}
	if f := cfg["CONNECTOR_LOG_FORMAT"]; f != "json" && f != "console" {
		t.Errorf("CONNECTOR_LOG_FORMAT %q", f)
	}
	checkChannels(t, cfg["CONNECTOR_CHANNELS"])
}

// checkChannels checks the "name:capacity,..." syntax of CONNECTOR_CHANNELS.
func checkChannels(t *testing.T, s string) {
	t.Helper()
	for _, part := range strings.Split(s, ",") {
		name, capacity, ok := strings.Cut(part, ":")
		n, err := strconv.Atoi(capacity)
		if !ok || err != nil || n <= 0 || (name != "root" && !strings.HasPrefix(name, "root.")) {
			t.Errorf("CONNECTOR_CHANNELS part %q: want root[.sub]:N", part)
		}
	}
}
