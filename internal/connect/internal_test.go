package connect

import "testing"

func TestClusterURL(t *testing.T) {
	for in, want := range map[string]string{
		"redis+cluster://u:pw@h1:6379,h2:6379,h3:6379": "redis://u:pw@h1:6379?addr=h2:6379&addr=h3:6379",
		"rediss+cluster://h1:6379?dial_timeout=3":      "rediss://h1:6379?dial_timeout=3",
		"redis://:pw@h1:6379,redis://:pw@h2:6379":      "redis://:pw@h1:6379?addr=h2:6379",
		"redis://h1:1,h2:2/0":                          "redis://h1:1?addr=h2:2",
		"redis+cluster://h1:6379/":                     "redis://h1:6379",
		"rediss://u:p@h1:1,h2:2?read_timeout=1s":       "rediss://u:p@h1:1?read_timeout=1s&addr=h2:2",
	} {
		got, ok := clusterURL(in)
		if !ok || got != want {
			t.Errorf("clusterURL(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
	for _, in := range []string{"redis://h:6379/0", "rediss://:pw@h:6380", "h:6379"} {
		if got, ok := clusterURL(in); ok {
			t.Errorf("clusterURL(%q) = %q, want not a cluster URL", in, got)
		}
	}
}

func TestURLSecrets(t *testing.T) {
	got := urlSecrets("nats://u:p%40ss@h1:4222, nats://tok@h2:4222,redis://:rpw@h,redis://justuser@h")
	want := map[string]bool{"p%40ss": true, "p@ss": true, "tok": true, "rpw": true}
	seen := map[string]bool{}
	for _, s := range got {
		if !want[s] {
			t.Errorf("unexpected secret %q", s)
		}
		seen[s] = true
	}
	if len(seen) != len(want) {
		t.Errorf("got %v, want %v", got, want)
	}
}
