package wire

import "testing"

// A consumer name reads back as the channel and band it was made from;
// other names (event listeners', the guard's) are not jobs queues.
func TestParseJobsConsumer(t *testing.T) {
	n := MustNames("connector")
	for _, c := range []struct {
		channel string
		band    int
	}{{"root", 0}, {"root", 2}, {"root.shop.orders", 1}, {"root.magento", -1}} {
		ch, band, ok := n.ParseJobsConsumer(n.JobsConsumer(c.channel, c.band))
		if !ok || ch != c.channel || band != c.band {
			t.Errorf("ParseJobsConsumer(JobsConsumer(%q, %d)) = %q, %d, %v", c.channel, c.band, ch, band, ok)
		}
	}
	for _, name := range []string{"ev__guard", "jobs~root", "jobs~root~3", "jobs~root~x", "jobs~~1", "orders~root~1"} {
		if ch, band, ok := n.ParseJobsConsumer(name); ok {
			t.Errorf("ParseJobsConsumer(%q) = %q, %d, true; want not a jobs queue", name, ch, band)
		}
	}
}
