package main

import (
	"encoding/json"
	"testing"

	"github.com/connector-go/connector/internal/testenv"
)

// `jobs stats --json` and `events stats --json` on a deployment with no
// queue and no listener yet give empty lists, as `jobs dead --json` does,
// not null: a script iterating over them (jq '.queues[]') does not fail.
func TestStatsJSONListsAreNeverNull(t *testing.T) {
	srv := testenv.StartNATS(t)
	_, prefix := testenv.Redis(t)
	_, cli := operatorCLI(t, srv.URL, prefix)
	cli("streams", "provision")
	for _, tc := range []struct {
		args []string
		key  string
	}{
		{[]string{"jobs", "stats", "--json"}, "queues"},
		{[]string{"events", "stats", "--json"}, "listeners"},
		{[]string{"jobs", "dead", "--json"}, ""},
		{[]string{"events", "dead", "--json"}, ""},
	} {
		out := cli(tc.args...)
		var v any
		if err := json.Unmarshal([]byte(out), &v); err != nil {
			t.Fatalf("%v: %v\n%s", tc.args, err, out)
		}
		if tc.key != "" {
			v = v.(map[string]any)[tc.key]
		}
		if l, ok := v.([]any); !ok || len(l) != 0 {
			t.Errorf("%v: %s is %#v, want []\n%s", tc.args, tc.key, v, out)
		}
	}
}
