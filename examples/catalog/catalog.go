// Package catalog is a small, in-memory product catalog with an HTTP JSON
// API: the demonstration LOCAL system of the connector examples (the
// company's own system, where Odoo would sit in the OCA connector). It is not
// part of the framework. What makes it a good citizen of a connector is one
// thing: every change publishes a domain event (create, write, unlink) to
// NATS with the [events] Publisher, carrying the origin of the change.
//
// Records are products, customers and orders, with string ids:
//
//	product  {"id", "name", "price": 12.5, "updated_at"}
//	customer {"id", "name", "email", "updated_at"}
//	order    {"id", "customer_id", "state", "lines": [{"product_id", "quantity", "price"}], "updated_at"}
//
// Each model has the same routes:
//
//	GET    /products?offset=0&limit=100   {"items": [...], "total": n}, ordered by id
//	GET    /products/{id}
//	POST   /products                      create (201)
//	PATCH  /products/{id}                 change the fields sent
//	DELETE /products/{id}                 (204)
//
// Errors are JSON, {"error": "...", "code": "..."}, with status 400
// ("bad_request": bad JSON or unknown field), 404 ("not_found": the record
// of the path does not exist), or 422 ("invalid": an order's customer and
// products must exist). A path the catalog does not serve is 404 with code
// "no_route", and a served path with a method it does not take is 405
// "method_not_allowed" (with Allow): only "not_found" means a missing
// record.
//
// # Origin and echo suppression
//
// A write that carries the header X-Origin (OriginHeader) publishes its
// event with that origin. The connector's local adapter sends
// X-Origin: <backend id> for the writes of an import, so the export listener
// of that backend (registered with events.SkipOrigin) skips the event
// instead of sending the record straight back to where it came from.
//
// A write that changes nothing publishes nothing; a write event lists the
// fields whose values changed.
package catalog

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/connector-go/connector/events"
	"go.uber.org/zap"
)

// OriginHeader names the backend instance whose import makes a write.
const OriginHeader = "X-Origin"

// The models of the catalog, as named in events and by the connector.
const (
	Product  = "product"
	Customer = "customer"
	Order    = "order"
)

// Publisher publishes domain events; *events.Publisher implements it.
type Publisher interface {
	Publish(ctx context.Context, ev events.Event) (string, error)
}

// Record is one catalog record as JSON field -> value.
type Record = map[string]any

// Server is the catalog: its data and its HTTP API, safe for concurrent use.
type Server struct {
	mux *http.ServeMux
	pub Publisher
	log *zap.Logger
	now func() time.Time

	// mu is held across a change and the publication of its event, so
	// that the events of one record are published in the order of its
	// changes.
	mu     sync.Mutex
	tables map[string]*table
}

type table struct {
	next int
	rows map[string]Record
}

// Option configures a Server.
type Option func(*Server)

// WithPublisher publishes an event for every change (default: none).
func WithPublisher(p Publisher) Option { return func(s *Server) { s.pub = p } }

// WithLogger logs failed publications (default: no logs).
func WithLogger(l *zap.Logger) Option { return func(s *Server) { s.log = l } }

// WithClock sets the clock of updated_at (default time.Now).
func WithClock(now func() time.Time) Option { return func(s *Server) { s.now = now } }

// schema lists the fields a model accepts.
var schema = map[string][]string{
	Product:  {"name", "price"},
	Customer: {"name", "email"},
	Order:    {"customer_id", "state", "lines"},
}

// paths maps the URL segment to the model.
var paths = map[string]string{"products": Product, "customers": Customer, "orders": Order}

// New returns an empty catalog serving its API.
func New(opts ...Option) *Server {
	s := &Server{mux: http.NewServeMux(), log: zap.NewNop(), now: time.Now, tables: map[string]*table{}}
	for _, o := range opts {
		o(s)
	}
	for m := range schema {
		s.tables[m] = &table{rows: map[string]Record{}}
	}
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	for path, model := range paths {
		s.mux.HandleFunc("GET /"+path, func(w http.ResponseWriter, r *http.Request) { s.list(w, r, model) })
		s.mux.HandleFunc("GET /"+path+"/{id}", func(w http.ResponseWriter, r *http.Request) { s.get(w, r, model) })
		s.mux.HandleFunc("POST /"+path, func(w http.ResponseWriter, r *http.Request) { s.write(w, r, model, "") })
		s.mux.HandleFunc("PATCH /"+path+"/{id}", func(w http.ResponseWriter, r *http.Request) { s.write(w, r, model, r.PathValue("id")) })
		s.mux.HandleFunc("DELETE /"+path+"/{id}", func(w http.ResponseWriter, r *http.Request) { s.remove(w, r, model) })
	}
	s.mux.HandleFunc("/", s.noRoute)
	return s
}

// ServeHTTP serves the catalog API.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// Records returns a copy of every record of model, ordered by id: for tests
// and tools that look at the catalog without HTTP.
func (s *Server) Records(model string) []Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.tables[model]
	if t == nil {
		return nil
	}
	out := make([]Record, 0, len(t.rows))
	for _, id := range sortedIDs(t) {
		out = append(out, clone(t.rows[id]))
	}
	return out
}

func (s *Server) list(w http.ResponseWriter, r *http.Request, model string) {
	offset, _ := strconv.Atoi(r.URL.Query().Get("offset"))
	limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
	all := s.Records(model)
	total := len(all)
	offset = min(max(offset, 0), total)
	end := total
	if limit > 0 {
		end = min(offset+limit, total)
	}
	writeJSON(w, http.StatusOK, map[string]any{"items": all[offset:end], "total": total})
}

func (s *Server) get(w http.ResponseWriter, r *http.Request, model string) {
	s.mu.Lock()
	rec, ok := s.tables[model].rows[r.PathValue("id")]
	rec = clone(rec)
	s.mu.Unlock()
	if !ok {
		writeError(w, http.StatusNotFound, "not_found", "%s %s not found", model, r.PathValue("id"))
		return
	}
	writeJSON(w, http.StatusOK, rec)
}

// write creates (id "") or changes a record and publishes its event.
func (s *Server) write(w http.ResponseWriter, r *http.Request, model, id string) {
	var in Record
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
	if err := dec.Decode(&in); err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", "decoding body: %v", err)
		return
	}
	delete(in, "id")
	delete(in, "updated_at")
	for f := range in {
		if !slices.Contains(schema[model], f) {
			writeError(w, http.StatusBadRequest, "bad_request", "unknown %s field %q", model, f)
			return
		}
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.tables[model]
	cur := Record{}
	if id != "" {
		old, ok := t.rows[id]
		if !ok {
			writeError(w, http.StatusNotFound, "not_found", "%s %s not found", model, id)
			return
		}
		cur = clone(old)
	}
	var changed []string
	for f, v := range in {
		if id == "" || !sameJSON(cur[f], v) {
			changed = append(changed, f)
		}
		cur[f] = v
	}
	if err := s.validate(model, cur); err != nil {
		writeError(w, http.StatusUnprocessableEntity, "invalid", "%v", err)
		return
	}
	name := events.Write
	status := http.StatusOK
	if id == "" {
		t.next++
		id = strconv.Itoa(t.next)
		name, status = events.Create, http.StatusCreated
	}
	if name == events.Write && len(changed) == 0 {
		writeJSON(w, status, cur) // nothing changed: no event
		return
	}
	cur["id"] = id
	cur["updated_at"] = s.now().UTC().Format(time.RFC3339Nano)
	t.rows[id] = cur
	slices.Sort(changed)
	s.publish(r, model, name, id, changed)
	writeJSON(w, status, clone(cur))
}

func (s *Server) remove(w http.ResponseWriter, r *http.Request, model string) {
	id := r.PathValue("id")
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.tables[model].rows[id]; !ok {
		writeError(w, http.StatusNotFound, "not_found", "%s %s not found", model, id)
		return
	}
	delete(s.tables[model].rows, id)
	s.publish(r, model, events.Unlink, id, nil)
	w.WriteHeader(http.StatusNoContent)
}

// publish sends the event of a change, with the request's origin. The
// change is kept even when the publication fails (it is logged): a real
// system would use an outbox to make both atomic.
func (s *Server) publish(r *http.Request, model, name, id string, fields []string) {
	if s.pub == nil {
		return
	}
	ev := events.Event{Model: model, Name: name, RecordID: id, Fields: fields, Origin: r.Header.Get(OriginHeader)}
	if _, err := s.pub.Publish(r.Context(), ev); err != nil {
		s.log.Error("catalog: publish event", zap.String("model", model), zap.String("event", name),
			zap.String("id", id), zap.Error(err))
	}
}

// validate checks a record about to be stored; s.mu is held.
func (s *Server) validate(model string, rec Record) error {
	str := func(f string) string { v, _ := rec[f].(string); return v }
	switch model {
	case Product:
		if strings.TrimSpace(str("name")) == "" {
			return fmt.Errorf("a product needs a name")
		}
		if _, ok := rec["price"].(float64); !ok && rec["price"] != nil {
			return fmt.Errorf("price must be a number")
		}
	case Customer:
		if !strings.Contains(str("email"), "@") {
			return fmt.Errorf("a customer needs an email")
		}
	case Order:
		if _, ok := s.tables[Customer].rows[str("customer_id")]; !ok {
			return fmt.Errorf("customer %q does not exist", str("customer_id"))
		}
		lines, _ := rec["lines"].([]any)
		for i, l := range lines {
			line, _ := l.(map[string]any)
			pid, _ := line["product_id"].(string)
			if _, ok := s.tables[Product].rows[pid]; !ok {
				return fmt.Errorf("line %d: product %q does not exist", i, pid)
			}
		}
	}
	return nil
}

func sortedIDs(t *table) []string {
	ids := make([]string, 0, len(t.rows))
	for id := range t.rows {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, func(a, b string) int {
		x, _ := strconv.Atoi(a)
		y, _ := strconv.Atoi(b)
		return x - y
	})
	return ids
}

// clone deep-copies a record through JSON (records hold JSON values only).
func clone(r Record) Record {
	if r == nil {
		return nil
	}
	b, _ := json.Marshal(r)
	var out Record
	_ = json.Unmarshal(b, &out)
	return out
}

func sameJSON(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// writeError answers {"error": message, "code": code}.
func writeError(w http.ResponseWriter, status int, code, format string, a ...any) {
	writeJSON(w, status, map[string]string{"error": fmt.Sprintf(format, a...), "code": code})
}

// noRoute answers a request that no route matches. "not_found" is kept for
// a record the catalog does not have, which a client reads as "the record
// is gone": a path the catalog does not serve (a wrong base URL) is 404
// "no_route", and a path served for other methods is 405
// "method_not_allowed" with an Allow header.
func (s *Server) noRoute(w http.ResponseWriter, r *http.Request) {
	var allow []string
	for _, m := range []string{"DELETE", "GET", "HEAD", "PATCH", "POST", "PUT"} {
		probe := *r
		probe.Method = m
		if _, pattern := s.mux.Handler(&probe); pattern != "/" && pattern != "" {
			allow = append(allow, m)
		}
	}
	if len(allow) > 0 {
		w.Header().Set("Allow", strings.Join(allow, ", "))
		writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", "%s %s not allowed; allowed: %s",
			r.Method, r.URL.Path, strings.Join(allow, ", "))
		return
	}
	writeError(w, http.StatusNotFound, "no_route", "no route for %s %s", r.Method, r.URL.Path)
}
