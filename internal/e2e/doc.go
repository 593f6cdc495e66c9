// Package e2e holds end-to-end tests of the runtime as a whole: one trace
// from a producer through jobs, nested jobs and event listeners; the
// metrics and health endpoints of app.RunWorker; and secrets kept out of
// logs, spans, metrics and errors. Every test runs against an embedded
// NATS JetStream server and the real Redis (internal/testenv).
//
// The package has no code of its own: run it with
//
//	go test -race ./internal/e2e/
package e2e
