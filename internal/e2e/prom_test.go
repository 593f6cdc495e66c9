package e2e_test

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// sample is one line of the Prometheus text format.
type sample struct {
	name   string
	labels map[string]string
	value  float64
}

// parseProm parses the Prometheus text exposition format (what promhttp
// serves without content negotiation): enough for the tests, not a general
// parser.
func parseProm(t *testing.T, text string) []sample {
	t.Helper()
	var out []sample
	for _, line := range strings.Split(text, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		s := sample{labels: map[string]string{}}
		rest := line
		if i := strings.IndexAny(rest, "{ "); i < 0 {
			t.Fatalf("metrics: bad line %q", line)
		} else {
			s.name, rest = rest[:i], rest[i:]
		}
		if strings.HasPrefix(rest, "{") {
			rest = rest[1:]
			for !strings.HasPrefix(rest, "}") {
				eq := strings.Index(rest, `="`)
				if eq < 0 {
					t.Fatalf("metrics: bad labels in %q", line)
				}
				key := strings.TrimPrefix(rest[:eq], ",")
				rest = rest[eq+2:]
				var val strings.Builder
				for {
					if rest == "" {
						t.Fatalf("metrics: unterminated label in %q", line)
					}
					c := rest[0]
					rest = rest[1:]
					if c == '"' {
						break
					}
					if c == '\\' && rest != "" {
						switch rest[0] {
						case 'n':
							val.WriteByte('\n')
						default:
							val.WriteByte(rest[0])
						}
						rest = rest[1:]
						continue
					}
					val.WriteByte(c)
				}
				s.labels[key] = val.String()
				rest = strings.TrimPrefix(rest, ",")
			}
			rest = rest[1:]
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			t.Fatalf("metrics: no value in %q", line)
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			t.Fatalf("metrics: value in %q: %v", line, err)
		}
		s.value = v
		out = append(out, s)
	}
	return out
}

// metrics is a scrape, queried by series name and a subset of labels.
type metrics []sample

// find returns the samples of name whose labels include want (pairs).
func (m metrics) find(name string, want ...string) []sample {
	var out []sample
next:
	for _, s := range m {
		if s.name != name {
			continue
		}
		for i := 0; i+1 < len(want); i += 2 {
			if s.labels[want[i]] != want[i+1] {
				continue next
			}
		}
		out = append(out, s)
	}
	return out
}

// value returns the value of the only sample of name with the labels, or
// -1 when there is none; it fails the test when several match.
func (m metrics) value(t *testing.T, name string, want ...string) float64 {
	t.Helper()
	got := m.find(name, want...)
	switch len(got) {
	case 0:
		return -1
	case 1:
		return got[0].value
	}
	t.Fatalf("%s%v: %d series match", name, want, len(got))
	return 0
}

// sum adds the values of the samples of name with the labels.
func (m metrics) sum(name string, want ...string) float64 {
	var v float64
	for _, s := range m.find(name, want...) {
		v += s.value
	}
	return v
}

// bucket returns the cumulative count of a histogram at le.
func (m metrics) bucket(t *testing.T, name, le string, want ...string) float64 {
	t.Helper()
	return m.value(t, name+"_bucket", append(want, "le", le)...)
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func scrape(t *testing.T, base string) (metrics, string) {
	t.Helper()
	code, body := httpGet(t, base+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("GET /metrics: %d %s", code, body)
	}
	return parseProm(t, body), body
}

func TestParseProm(t *testing.T) {
	m := metrics(parseProm(t, `# HELP x a
# TYPE x counter
x_total{a="1",b="q\"uo\\te"} 3
y 4.5 1700000000
z{le="+Inf"} 7
`))
	if got := m.value(t, "x_total", "a", "1", "b", `q"uo\te`); got != 3 {
		t.Errorf("x_total = %v (%v)", got, m)
	}
	if got := m.value(t, "y"); got != 4.5 {
		t.Errorf("y = %v", got)
	}
	if got := m.value(t, "z", "le", "+Inf"); got != 7 {
		t.Errorf("z = %v", got)
	}
	if got := m.value(t, "nope"); got != -1 {
		t.Errorf("nope = %v", got)
	}
}
