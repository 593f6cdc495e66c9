package shopconnector_test

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// The README and docs/example.md report the size of the example connector
// (wc -l of its non-test Go files): the figures must stay true.
func TestLineCounts(t *testing.T) {
	lines := map[string]int{} // path relative to examples/shopconnector -> lines
	total, pkg, pkgCode := 0, 0, 0
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		all := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
		lines[filepath.ToSlash(path)] = len(all)
		total += len(all)
		if filepath.Dir(path) == "." {
			pkg += len(all)
			for _, l := range all {
				if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "//") {
					pkgCode++
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	read := func(path string) string {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return strings.Join(strings.Fields(string(b)), " ") // line breaks as spaces
	}
	check := func(doc, text, pattern string, want int) {
		t.Helper()
		m := regexp.MustCompile(pattern).FindStringSubmatch(text)
		if m == nil {
			t.Errorf("%s: no match for %q", doc, pattern)
			return
		}
		if got, _ := strconv.Atoi(m[1]); got != want {
			t.Errorf("%s says %d in %q; the count is %d", doc, got, m[0], want)
		}
	}
	readme := read("../../README.md")
	check("README.md", readme, "The example connector in `examples/shopconnector` \\((\\d+) lines of Go", total)
	check("README.md", readme, "tests aside: the connector package, (\\d+),", pkg)
	check("README.md", readme, "the (\\d+)-line `shop-schedule` command", lines["cmd/shop-schedule/main.go"])
	check("README.md", readme, "`shop-worker`, a `service.Main` in (\\d+) lines", lines["cmd/shop-worker/main.go"])
	doc := read("../../docs/example.md")
	check("docs/example.md", doc, "`examples/shopconnector` is (\\d+) lines of Go", total)
	check("docs/example.md", doc, "the connector package, (\\d+) \\(", pkg)
	check("docs/example.md", doc, "; (\\d+) without comments and blank lines", pkgCode)
	for path, n := range lines {
		check("docs/example.md", doc, "`"+regexp.QuoteMeta(path)+"` (\\d+)", n)
	}
}
