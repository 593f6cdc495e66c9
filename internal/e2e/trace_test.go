package e2e_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/connector-go/connector/dispatcher"
	"github.com/connector-go/connector/events"
	"github.com/connector-go/connector/internal/wire"
	"github.com/connector-go/connector/job"
	"github.com/connector-go/connector/worker"
	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// One trace from a producer's HTTP request to the last job: the request
// enqueues job A; A enqueues job B; B publishes a domain event; a listener
// handles the event and enqueues job C; C runs. Every span shares the
// request's trace id and hangs under the span that caused it, with the
// messaging semantic-convention kinds and attributes.
func TestOneTraceProducerJobsEventsJobs(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	pub := e.publisher(nil, events.WithTracerProvider(e.tp))

	// ids of B, the event and C, as their producers learn them
	idsB, idsEv, idsC := make(chan string, 1), make(chan string, 1), make(chan string, 1)
	reg := worker.NewRegistry()
	worker.MustRegister(reg, func(ctx context.Context, j *job.Job[jobA]) (string, error) {
		id, err := e.d.Enqueue(ctx, jobB(j.Args))
		idsB <- id
		return "enqueued b", err
	})
	worker.MustRegister(reg, func(ctx context.Context, j *job.Job[jobB]) (string, error) {
		id, err := pub.Publish(ctx, events.Event{Model: "sale.order", Name: events.Write, RecordID: j.Args.Order,
			Fields: []string{"partner_id"}})
		idsEv <- id
		return "published", err
	})
	// A job's trace context travels in its envelope, not in headers: the
	// dispatcher's jobs carry no header at all (docs/observability.md); the
	// parent links below show that it arrives.
	var hdrMu sync.Mutex
	var hdrBad []string
	reg.Use(func(next worker.Handler) worker.Handler {
		return func(ctx context.Context, m *worker.Message) (string, error) {
			if len(m.Header) != 0 {
				hdrMu.Lock()
				hdrBad = append(hdrBad, fmt.Sprintf("%s: %v", m.Name, m.Header))
				hdrMu.Unlock()
			}
			return next(ctx, m)
		}
	})
	ran := make(chan string, 1)
	worker.MustRegister(reg, func(ctx context.Context, j *job.Job[jobC]) (string, error) {
		ran <- j.Args.Partner
		return "done", nil
	})
	e.startWorker(reg)

	l := e.listeners(e.js, e.rdb, quietLogger(t), events.WithTracerProvider(e.tp),
		events.WithAckWait(5*time.Second))
	if err := l.On("export_order", "sale.order", events.Write, func(ctx context.Context, ev events.Event) error {
		id, err := e.d.Enqueue(ctx, jobC{Partner: "p-" + ev.RecordID})
		idsC <- id
		return err
	}, events.WithPartitions(1)); err != nil {
		t.Fatal(err)
	}
	e.startListeners(l)

	// The producer service: an HTTP server span enqueues job A.
	rctx, root := e.tp.Tracer("e2e/producer").Start(ctx, "POST /orders", trace.WithSpanKind(trace.SpanKindServer))
	idA, err := e.d.Enqueue(rctx, jobA{Order: "SO042"})
	root.End()
	if err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-ran:
		if p != "p-SO042" {
			t.Fatalf("job C got %q", p)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("job C did not run; spans: %v", spanNames(e.spans.GetSpans()))
	}
	idB, idEv, idC := recv(t, idsB), recv(t, idsEv), recv(t, idsC)
	hdrMu.Lock()
	if len(hdrBad) > 0 {
		t.Errorf("jobs with headers: %v", hdrBad)
	}
	hdrMu.Unlock()

	// Spans end in no fixed order (the listener's ends after job C may
	// have run): wait for all of them.
	var conds []func(tracetest.SpanStub) bool
	for _, id := range []string{idA, idB, idEv, idC} {
		conds = append(conds, op("send", id), op("process", id))
	}
	spans := e.waitSpans(10*time.Second, "the 8 messaging spans", conds...)
	jobs, evs := e.names.JobsStream(), e.names.EventsStream()

	rootS := one(t, spans, "root", func(s tracetest.SpanStub) bool { return s.Name == "POST /orders" })
	sendA := one(t, spans, "send A", op("send", idA))
	procA := one(t, spans, "process A", op("process", idA))
	sendB := one(t, spans, "send B", op("send", idB))
	procB := one(t, spans, "process B", op("process", idB))
	sendEv := one(t, spans, "publish event", op("send", idEv))
	procEv := one(t, spans, "handle event", op("process", idEv))
	sendC := one(t, spans, "send C", op("send", idC))
	procC := one(t, spans, "process C", op("process", idC))

	// One trace, each span the child of its cause.
	for _, s := range spans {
		if s.SpanContext.TraceID() != rootS.SpanContext.TraceID() {
			t.Errorf("span %q in trace %s, want the request's %s", s.Name, s.SpanContext.TraceID(), rootS.SpanContext.TraceID())
		}
	}
	childOf(t, sendA, rootS)
	childOf(t, procA, sendA)
	childOf(t, sendB, procA)
	childOf(t, procB, sendB)
	childOf(t, sendEv, procB)
	childOf(t, procEv, sendEv)
	childOf(t, sendC, procEv)
	childOf(t, procC, sendC)
	if len(spans) != 9 {
		t.Errorf("%d spans, want 9: %v", len(spans), spanNames(spans))
	}

	// Kinds and messaging attributes.
	for _, s := range []tracetest.SpanStub{sendA, sendB, sendC} {
		e.messaging(s, trace.SpanKindProducer, "send", jobs, "")
	}
	for _, s := range []tracetest.SpanStub{procA, procB, procC} {
		e.messaging(s, trace.SpanKindConsumer, "process", jobs, jobsConsumer)
		// Past eight attributes the SDK builds a hash table per span when
		// it ends (about a third more CPU per job span): keep within.
		if len(s.Attributes) > 8 {
			t.Errorf("job span %q has %d attributes, want at most 8: %v", s.Name, len(s.Attributes), s.Attributes)
		}
	}
	evDest := attr(sendEv, "messaging.destination.name")
	e.messaging(sendEv, trace.SpanKindProducer, "send", evDest, "")
	if strings.Contains(evDest, "SO042") || !strings.HasPrefix(evDest, e.prefix+".events.") {
		t.Errorf("event send destination %q: want a low-cardinality subject template under %s.events", evDest, e.prefix)
	}
	e.messaging(procEv, trace.SpanKindConsumer, "process", evs, events.ConsumerName("export_order", 0, 1))
	if got := attr(procA, "connector.job.name"); got != "e2e.a" {
		t.Errorf("process A: connector.job.name %q", got)
	}
	for _, s := range spans {
		if s.Status.Code == codes.Error {
			t.Errorf("span %q has status Error: %s", s.Name, s.Status.Description)
		}
		if s.EndTime.Before(s.StartTime) || s.EndTime.IsZero() {
			t.Errorf("span %q not ended properly", s.Name)
		}
	}
	// Send ends when JetStream acknowledged it; the job's process span
	// starts after that and ends after its own sends (nested job, event).
	if procB.EndTime.Before(sendEv.EndTime) || procA.EndTime.Before(sendB.EndTime) {
		t.Error("a process span ended before the sends it made")
	}
}

func recv(t *testing.T, ch chan string) string {
	t.Helper()
	select {
	case s := <-ch:
		if s == "" {
			t.Fatal("empty id")
		}
		return s
	case <-time.After(10 * time.Second):
		t.Fatal("id not received")
		return ""
	}
}

// A failing run records the error on its process span: status Error with
// the message, error.type, an exception event. A job retried and then
// successful has one process span per attempt, each a child of the same
// send span; only the failed attempt is in error.
func TestSpanErrors(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	reg := worker.NewRegistry()
	worker.MustRegister(reg, func(ctx context.Context, j *job.Job[jobFail]) (string, error) {
		if j.Meta.Attempt <= j.Args.Retries {
			return "", job.RetryAfter(errors.New(j.Args.Msg), 10*time.Millisecond)
		}
		if j.Args.Retries > 0 {
			return "ok after retry", nil
		}
		return "", fmt.Errorf("export: %w", &exportError{j.Args.Msg})
	})
	e.startWorker(reg)
	// A listener that fails on an event's first delivery.
	l := e.listeners(e.js, e.rdb, quietLogger(t), events.WithTracerProvider(e.tp),
		events.WithAckWait(5*time.Second))
	if err := l.On("flaky", "res.partner", "", func(ctx context.Context, ev events.Event) error {
		if ev.Attempt == 1 {
			return errors.New("catalog unavailable")
		}
		return nil
	}, events.WithPartitions(1), events.WithRetryDelay(func(int) time.Duration { return 10 * time.Millisecond })); err != nil {
		t.Fatal(err)
	}
	e.startListeners(l)
	evID, err := e.publisher(nil).Publish(ctx, events.Event{Model: "res.partner", Name: events.Create, RecordID: "7"})
	if err != nil {
		t.Fatal(err)
	}

	deadID, err := e.d.Enqueue(ctx, jobFail{Msg: "shop said 500"}, job.WithMaxRetries(1))
	if err != nil {
		t.Fatal(err)
	}
	retryID, err := e.d.Enqueue(ctx, jobFail{Msg: "shop busy", Retries: 1})
	if err != nil {
		t.Fatal(err)
	}
	procRetryOK := func(s tracetest.SpanStub) bool { return op("process", retryID)(s) && s.Status.Code != codes.Error }
	procEvOK := func(s tracetest.SpanStub) bool { return op("process", evID)(s) && s.Status.Code != codes.Error }
	spans := e.waitSpans(20*time.Second, "dead run, successful retry, event handled on its second delivery",
		op("process", deadID), procRetryOK, procEvOK)

	evRuns := filter(spans, op("process", evID))
	if len(evRuns) != 2 || evRuns[0].Status.Code != codes.Error || evRuns[0].Status.Description != "catalog unavailable" ||
		len(exceptionEvents(evRuns[0])) != 1 || attr(evRuns[0], "error.type") == "" {
		t.Errorf("event handling spans: want a failed one (status, error.type, exception) then a good one; got %d: %+v", len(evRuns), evRuns)
	}

	dead := one(t, spans, "dead run", op("process", deadID))
	if dead.Status.Code != codes.Error || !strings.Contains(dead.Status.Description, "shop said 500") {
		t.Errorf("dead run status %v %q, want Error with the message", dead.Status.Code, dead.Status.Description)
	}
	if got := attr(dead, "error.type"); got != "*fmt.wrapError" && got != "*e2e_test.exportError" {
		t.Errorf("error.type %q", got)
	}
	exc := exceptionEvents(dead)
	if len(exc) != 1 || !strings.Contains(exc[0]["exception.message"], "export: shop said 500") || exc[0]["exception.type"] == "" {
		t.Errorf("exception events %v", exc)
	}

	runs := filter(spans, op("process", retryID))
	send := one(t, spans, "send retried job", op("send", retryID))
	if len(runs) != 2 {
		t.Fatalf("retried job: %d process spans, want 2", len(runs))
	}
	var failed, ok int
	for _, r := range runs {
		childOf(t, r, send)
		switch r.Status.Code {
		case codes.Error:
			failed++
			if !strings.Contains(r.Status.Description, "shop busy") || len(exceptionEvents(r)) != 1 {
				t.Errorf("failed attempt: status %q, events %v", r.Status.Description, exceptionEvents(r))
			}
			if got := attr(r, "connector.job.attempt"); got != "1" {
				t.Errorf("failed attempt: connector.job.attempt %q", got)
			}
		default:
			ok++
			if len(exceptionEvents(r)) != 0 {
				t.Errorf("successful attempt has exception events")
			}
		}
	}
	if failed != 1 || ok != 1 {
		t.Errorf("retried job: %d failed and %d ok attempts, want 1 and 1", failed, ok)
	}
}

type exportError struct{ msg string }

func (e *exportError) Error() string { return e.msg }

func exceptionEvents(s tracetest.SpanStub) []map[string]string {
	var out []map[string]string
	for _, ev := range s.Events {
		if ev.Name != "exception" {
			continue
		}
		m := map[string]string{}
		for _, kv := range ev.Attributes {
			m[string(kv.Key)] = kv.Value.String()
		}
		out = append(out, m)
	}
	return out
}

// With worker.WithLinkedTraces a job run starts a new trace whose root
// span links to the producer's send span; the producer's trace stays
// short. A job the run enqueues belongs to the run's new trace.
func TestLinkedTraces(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	ids := make(chan string, 1)
	reg := worker.NewRegistry()
	worker.MustRegister(reg, func(ctx context.Context, j *job.Job[jobA]) (string, error) {
		id, err := e.d.Enqueue(ctx, jobB(j.Args))
		ids <- id
		return "", err
	})
	worker.MustRegister(reg, func(ctx context.Context, j *job.Job[jobB]) (string, error) { return "", nil })
	e.startWorker(reg, worker.WithLinkedTraces())

	rctx, root := e.tp.Tracer("e2e/producer").Start(ctx, "POST /orders", trace.WithSpanKind(trace.SpanKindServer))
	idA, err := e.d.Enqueue(rctx, jobA{Order: "SO7"})
	root.End()
	if err != nil {
		t.Fatal(err)
	}
	idB := recv(t, ids)
	spans := e.waitSpans(20*time.Second, "the 4 messaging spans", op("send", idA), op("process", idA), op("send", idB), op("process", idB))
	rootS := one(t, spans, "root", func(s tracetest.SpanStub) bool { return s.Name == "POST /orders" })
	sendA := one(t, spans, "send A", op("send", idA))
	procA := one(t, spans, "process A", op("process", idA))
	sendB := one(t, spans, "send B", op("send", idB))
	procB := one(t, spans, "process B", op("process", idB))

	childOf(t, sendA, rootS)
	for _, p := range []struct{ proc, send tracetest.SpanStub }{{procA, sendA}, {procB, sendB}} {
		proc, send := p.proc, p.send
		if proc.SpanContext.TraceID() == send.SpanContext.TraceID() {
			t.Errorf("%q: same trace as its producer; want a new trace", proc.Name)
		}
		if proc.Parent.IsValid() {
			t.Errorf("%q: has parent %s; want a root span", proc.Name, proc.Parent.SpanID())
		}
		if len(proc.Links) != 1 || proc.Links[0].SpanContext.SpanID() != send.SpanContext.SpanID() ||
			proc.Links[0].SpanContext.TraceID() != send.SpanContext.TraceID() {
			t.Errorf("%q: links %+v, want one link to %q", proc.Name, proc.Links, send.Name)
		}
		e.messaging(proc, trace.SpanKindConsumer, "process", e.names.JobsStream(), jobsConsumer)
	}
	// B's send is in A's run's trace.
	childOf(t, sendB, procA)
}

// A bulk enqueue is one PRODUCER span for the batch (the messaging
// conventions' batch send, with messaging.batch.message_count); each job
// carries its context and runs as its child, in the caller's trace.
func TestBulkEnqueueIsOneBatchSpan(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	reg := worker.NewRegistry()
	worker.MustRegister(reg, func(ctx context.Context, j *job.Job[jobC]) (string, error) { return "ok", nil })
	e.startWorker(reg)
	rctx, root := e.tp.Tracer("e2e/producer").Start(ctx, "import batch", trace.WithSpanKind(trace.SpanKindInternal))
	res, err := e.d.EnqueueMany(rctx, []dispatcher.Item{{Args: jobC{Partner: "1"}}, {Args: jobC{Partner: "2"}}, {Args: jobC{Partner: "3"}}})
	root.End()
	if err != nil {
		t.Fatal(err)
	}
	conds := []func(tracetest.SpanStub) bool{func(s tracetest.SpanStub) bool { return attr(s, "messaging.batch.message_count") == "3" }}
	for _, r := range res {
		conds = append(conds, op("process", r.ID))
	}
	spans := e.waitSpans(20*time.Second, "batch send span and three runs", conds...)
	send := one(t, spans, "batch send", func(s tracetest.SpanStub) bool { return attr(s, "messaging.operation.type") == "send" })
	if send.SpanKind != trace.SpanKindProducer || attr(send, "messaging.system") != "nats" ||
		attr(send, "messaging.destination.name") != e.names.JobsStream() || attr(send, "messaging.operation.name") != "send" ||
		hasAttr(send, "messaging.message.id") {
		t.Errorf("batch span: kind %v, attributes %v", send.SpanKind, send.Attributes)
	}
	if send.Parent.SpanID() != root.SpanContext().SpanID() {
		t.Errorf("batch span's parent %s, want the caller's span", send.Parent.SpanID())
	}
	for _, r := range res {
		childOf(t, one(t, spans, "run "+r.ID, op("process", r.ID)), send)
	}
}

// A publisher in another language may carry the trace context in the
// `traceparent` header (the usual NATS instrumentation) or in the
// envelope's `trace` map (docs/protocol.md); the run continues it either
// way, and the envelope's wins when a message has both.
func TestTraceContextFromHeadersOrEnvelope(t *testing.T) {
	e := newEnv(t)
	reg := worker.NewRegistry()
	worker.MustRegister(reg, func(ctx context.Context, j *job.Job[jobC]) (string, error) { return "ok", nil })
	e.startWorker(reg)
	const (
		traceH, spanH = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
		traceE, spanE = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	)
	publish := func(id string, trace map[string]string, header string) {
		env := map[string]any{"v": 1, "id": id, "name": "e2e.c", "args": map[string]any{"Partner": "x"}}
		if trace != nil {
			env["trace"] = trace
		}
		data, err := wire.Marshal(env)
		if err != nil {
			t.Fatal(err)
		}
		m := nats.NewMsg(e.names.JobsSubject(job.DefaultChannel, 1))
		m.Data = data
		if header != "" {
			m.Header["traceparent"] = []string{header}
		}
		if _, err := e.js.PublishMsg(context.Background(), m); err != nil {
			t.Fatal(err)
		}
	}
	publish("hdr", nil, "00-"+traceH+"-"+spanH+"-01")
	publish("both", map[string]string{"traceparent": "00-" + traceE + "-" + spanE + "-01"}, "00-"+traceH+"-"+spanH+"-01")
	spans := e.waitSpans(20*time.Second, "two runs", op("process", "hdr"), op("process", "both"))
	for _, c := range []struct{ id, traceID, parent string }{{"hdr", traceH, spanH}, {"both", traceE, spanE}} {
		s := one(t, spans, "run "+c.id, op("process", c.id))
		if s.SpanContext.TraceID().String() != c.traceID || s.Parent.SpanID().String() != c.parent || !s.Parent.IsRemote() {
			t.Errorf("run %s: trace %s parent %s, want trace %s parent %s", c.id, s.SpanContext.TraceID(), s.Parent.SpanID(), c.traceID, c.parent)
		}
	}
}

// A periodic schedule's envelope carries no trace context: each firing
// starts a trace of its own, and registering it again from another trace
// finds it registered as asked (the same message stays).
func TestPeriodicScheduleCarriesNoTrace(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	subject := e.names.PeriodicSubject("traced")
	s, err := e.js.Stream(ctx, e.names.JobsStream())
	if err != nil {
		t.Fatal(err)
	}
	var seq uint64
	for i := 0; i < 2; i++ {
		rctx, root := e.tp.Tracer("e2e/producer").Start(ctx, fmt.Sprintf("startup %d", i))
		err := e.d.Schedule(rctx, "traced", "@every 1h", jobC{Partner: "p"})
		root.End()
		if err != nil {
			t.Fatal(err)
		}
		m, err := s.GetLastMsgForSubject(ctx, subject)
		if err != nil {
			t.Fatal(err)
		}
		env, err := wire.DecodeEnvelope(m.Data, 0)
		if err != nil || env.Trace != nil || m.Header.Get("traceparent") != "" {
			t.Fatalf("schedule message: %v, trace %q, headers %v", err, env.Trace, m.Header)
		}
		if i == 1 && m.Sequence != seq {
			t.Fatalf("registered again from another trace: message %d replaced by %d", seq, m.Sequence)
		}
		seq = m.Sequence
	}
	if err := e.d.Unschedule(ctx, "traced"); err != nil {
		t.Fatal(err)
	}
}

// With dispatcher.WithTraceHeaders the jobs carry their trace context in
// lower-case W3C headers as well, for tools that read headers (one Enqueue
// and one bulk enqueue here); the runs are still children of their sends.
func TestTraceHeadersOption(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	d, err := dispatcher.New(e.js, dispatcher.WithPrefix(e.prefix), dispatcher.WithTracerProvider(e.tp), dispatcher.WithTraceHeaders())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close(context.Background()) })
	headers := make(chan string, 3)
	reg := worker.NewRegistry()
	reg.Use(func(next worker.Handler) worker.Handler {
		return func(ctx context.Context, m *worker.Message) (string, error) {
			if len(m.Header) != 1 || len(m.Header["traceparent"]) != 1 {
				headers <- fmt.Sprintf("bad headers %v", m.Header)
			} else {
				headers <- m.Header["traceparent"][0]
			}
			return next(ctx, m)
		}
	})
	worker.MustRegister(reg, func(ctx context.Context, j *job.Job[jobC]) (string, error) { return "ok", nil })
	e.startWorker(reg)
	rctx, root := e.tp.Tracer("e2e/producer").Start(ctx, "request")
	one1, err := d.Enqueue(rctx, jobC{Partner: "1"})
	if err != nil {
		t.Fatal(err)
	}
	res, err := d.EnqueueMany(rctx, []dispatcher.Item{{Args: jobC{Partner: "2"}}, {Args: jobC{Partner: "3"}}})
	root.End()
	if err != nil {
		t.Fatal(err)
	}
	ids := []string{one1, res[0].ID, res[1].ID}
	spans := e.waitSpans(20*time.Second, "three runs", op("process", ids[0]), op("process", ids[1]), op("process", ids[2]))
	got := map[string]bool{}
	for range ids {
		got[recv(t, headers)] = true
	}
	sendOne := one(t, spans, "send", op("send", ids[0]))
	sendBatch := one(t, spans, "batch send", func(s tracetest.SpanStub) bool { return attr(s, "messaging.batch.message_count") == "2" })
	for i, id := range ids {
		send := sendBatch
		if i == 0 {
			send = sendOne
		}
		childOf(t, one(t, spans, "run "+id, op("process", id)), send)
		tp := fmt.Sprintf("00-%s-%s-01", send.SpanContext.TraceID(), send.SpanContext.SpanID())
		if !got[tp] {
			t.Errorf("job %s: no traceparent header %s among %v", id, tp, got)
		}
	}
}
