// Package channels parses and resolves channel configurations in the seed's
// syntax: "root:4,root.magento:2,root.magento.orders:1:sequential,root.slow:2:throttle=5".
//
// Every entry is name[:capacity[:option...]]. Capacity is the number of jobs
// of the channel (and of its unconfigured descendants) that may run at once
// across the whole fleet; 0 or absent means no limit. Options: "sequential"
// (one at a time, in enqueue order, waiting while the head job retries; it
// covers its unconfigured sub-channels too, and no channel below it may be
// configured) and
// "throttle=N" (at most one job start per N seconds, fleet-wide). "root" is
// always configured (unlimited unless given).
package channels

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/connector-go/connector/internal/wire"
)

// Channel is one configured channel.
type Channel struct {
	Name       string
	Capacity   int // 0: unlimited
	Sequential bool
	Throttle   time.Duration
}

// Limited reports whether starting a job of this channel needs a slot.
func (c Channel) Limited() bool { return c.Capacity > 0 || c.Throttle > 0 }

// Config is a set of channels.
type Config struct {
	byName map[string]Channel
}

// Parse reads a configuration string (entries separated by commas or new
// lines; '#' starts a comment).
func Parse(s string) (*Config, error) {
	c := &Config{byName: map[string]Channel{"root": {Name: "root"}}}
	var entries []string
	for _, line := range strings.Split(s, "\n") {
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		entries = append(entries, strings.Split(line, ",")...)
	}
	seen := map[string]bool{}
	for _, e := range entries {
		e = strings.TrimSpace(e)
		if e == "" {
			continue
		}
		parts := strings.Split(e, ":")
		ch := Channel{Name: strings.TrimSpace(parts[0])}
		if err := Valid(ch.Name); err != nil {
			return nil, err
		}
		if seen[ch.Name] {
			return nil, fmt.Errorf("channels: %q configured twice", ch.Name)
		}
		seen[ch.Name] = true
		if len(parts) > 1 && strings.TrimSpace(parts[1]) != "" {
			n, err := strconv.Atoi(strings.TrimSpace(parts[1]))
			if err != nil || n < 0 {
				return nil, fmt.Errorf("channels: %q: capacity must be a whole number >= 0", e)
			}
			ch.Capacity = n
		}
		for _, opt := range parts[min(2, len(parts)):] {
			opt = strings.TrimSpace(opt)
			switch {
			case opt == "sequential":
				ch.Sequential = true
			case strings.HasPrefix(opt, "throttle="):
				secs, err := strconv.ParseFloat(strings.TrimPrefix(opt, "throttle="), 64)
				// Redis counts the wait in whole ms: less is no throttle, and
				// NaN, Inf or more than a Duration holds would be negative.
				if err != nil || !(secs >= 0.001) || secs >= float64(math.MaxInt64)/float64(time.Second) {
					return nil, fmt.Errorf("channels: %q: throttle=N wants N seconds >= 0.001", e)
				}
				ch.Throttle = time.Duration(secs * float64(time.Second))
			case opt == "":
			default:
				return nil, fmt.Errorf("channels: %q: unknown option %q (sequential, throttle=N)", e, opt)
			}
		}
		if ch.Sequential && ch.Capacity != 1 {
			if ch.Capacity > 1 {
				return nil, fmt.Errorf("channels: %q: a sequential channel has capacity 1", e)
			}
			ch.Capacity = 1
		}
		c.byName[ch.Name] = ch
	}
	// A sequential channel orders its whole subtree (one consumer): a
	// configured channel below it would need a consumer of its own.
	for name := range c.byName {
		for n := name; strings.Contains(n, "."); {
			n = n[:strings.LastIndexByte(n, '.')]
			if p, ok := c.byName[n]; ok && p.Sequential {
				return nil, fmt.Errorf("channels: %q is below the sequential channel %q, whose jobs (and its sub-channels') run one at a time in one order: it cannot be configured on its own", name, n)
			}
		}
	}
	return c, nil
}

// MustParse is Parse for constants.
func MustParse(s string) *Config {
	c, err := Parse(s)
	if err != nil {
		panic(err)
	}
	return c
}

// Valid checks a channel name: "root" or dot-separated tokens below it,
// each starting with a letter (letters, digits, '_' and '-').
func Valid(name string) error {
	if err := wire.ValidChannel(name); err != nil {
		return err
	}
	for i := 0; i < len(name); i++ {
		if i == 0 || name[i-1] == '.' {
			if c := name[i]; !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
				return fmt.Errorf("%w: channel %q: every part must start with a letter", wire.ErrBadName, name)
			}
		}
	}
	return nil
}

// Get returns the configured channel of that exact name.
func (c *Config) Get(name string) (Channel, bool) {
	ch, ok := c.byName[name]
	return ch, ok
}

// Resolve returns the nearest configured channel at or above name.
func (c *Config) Resolve(name string) Channel {
	for n := name; ; {
		if ch, ok := c.byName[n]; ok {
			return ch
		}
		i := strings.LastIndexByte(n, '.')
		if i < 0 {
			return c.byName["root"]
		}
		n = n[:i]
	}
}

// Chain returns the configured channels from name up to root, nearest first.
func (c *Config) Chain(name string) []Channel {
	var out []Channel
	for n := c.Resolve(name).Name; ; {
		if ch, ok := c.byName[n]; ok {
			out = append(out, ch)
		}
		i := strings.LastIndexByte(n, '.')
		if i < 0 {
			return out
		}
		n = n[:i]
	}
}

// Limited reports whether any channel of the chain limits starts.
func (c *Config) Limited(name string) bool {
	for _, ch := range c.Chain(name) {
		if ch.Limited() {
			return true
		}
	}
	return false
}

// All lists the configured channels, sorted by name.
func (c *Config) All() []Channel {
	out := make([]Channel, 0, len(c.byName))
	for _, ch := range c.byName {
		out = append(out, ch)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// String renders the configuration in the syntax Parse reads.
func (c *Config) String() string {
	var parts []string
	for _, ch := range c.All() {
		s := ch.Name + ":" + strconv.Itoa(ch.Capacity)
		if ch.Sequential {
			s += ":sequential"
		}
		if ch.Throttle > 0 {
			s += ":throttle=" + strconv.FormatFloat(ch.Throttle.Seconds(), 'f', -1, 64)
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, ",")
}

// Bands: priorities map to three bands, each with its own subject, so that
// a job of better priority overtakes a backlog of worse ones. Within a band
// jobs start in enqueue order.
const (
	BandHigh   = 0 // priority < 5
	BandNormal = 1 // 5 <= priority < 15 (the default, 10)
	BandLow    = 2 // priority >= 15
	Bands      = 3
)

// Band returns the band of a priority (lower runs first).
func Band(priority int) int {
	switch {
	case priority < 5:
		return BandHigh
	case priority < 15:
		return BandNormal
	}
	return BandLow
}
