package events_test

import (
	"os"
	"strings"
	"testing"

	"github.com/connector-go/connector/events"
)

// docs/security.md lists the consumers a worker creates and reads, for
// least-privilege permissions: the subject guard's consumer is one of them.
func TestSecurityDocListsGuardConsumer(t *testing.T) {
	doc, err := os.ReadFile("../docs/security.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(doc), "`"+events.GuardConsumer+"`") {
		t.Errorf("docs/security.md does not mention the events guard consumer %s (events/guard.go)", events.GuardConsumer)
	}
}
