package events

import "time"

// WithIntervals shortens how often a waiting listener looks again and how
// often a consuming one checks it still owns its listener, for tests.
func WithIntervals(poll, watch time.Duration) Option {
	return listenersOption(func(l *Listeners) { l.pollInterval, l.watchInterval = poll, watch })
}
