// Package shop is a small, in-memory web shop with an HTTP JSON API. It is a
// demonstration EXTERNAL system ("backend") for the connector examples, not
// part of the framework: it imports nothing from it, and a connector talks to
// it only over HTTP, exactly as it would talk to a real shop or ERP.
//
// The shop holds products, customers and orders and serves them in two API
// versions whose field names differ, so that a connector has something real
// to map:
//
//	v1 product  {"id", "name", "price": 12.5, "updated_at"}
//	v2 product  {"id", "title", "unit_price": {"amount": "12.50", "currency": "EUR"}, "modified"}
//	v1 customer {"id", "name", "email", "updated_at"}
//	v2 customer {"id", "display_name", "email_address", "modified"}
//	v1 order    {"id", "customer_id", "status", "lines": [{"product_id", "quantity", "price"}], "total", "updated_at"}
//	v2 order    {"id", "customer": {"id"}, "state", "items": [{"product": {"id"}, "qty", "unit_price"}], "total", "modified"}
//
// Each version has, for each of products, customers and orders:
//
//	GET    /v1/products?updated_since=RFC3339&updated_before=RFC3339&page=1&per_page=20
//	GET    /v1/products/{id}
//	POST   /v1/products          create (201)
//	PUT    /v1/products/{id}     replace
//	PATCH  /v1/products/{id}     change only the fields sent
//	DELETE /v1/products/{id}     (204)
//
// Lists are ordered by modification time, then id, which is what an
// incremental import ("everything changed since my last run") needs;
// updated_since is inclusive, updated_before exclusive. Every write stamps
// the record with a modification time strictly later than any earlier one.
// v1 lists answer {"items", "page", "per_page", "total"}; v2 lists answer
// {"data", "meta": {"page", "per_page", "total", "next_page"}}.
//
// Errors are JSON, {"error": {"code": "not_found", "message": "..."}}, with
// status 400 (bad request or unknown field: the API is strict, so sending a v1
// field to v2 fails loudly), 404, 409 (a customer or product still used by an
// order) or 422 (validation). A 404 with code "not_found" means one thing:
// the record of the path does not exist. A path the shop does not serve at
// all (an unknown version or resource, a wrong prefix) is 404 with code
// "no_route", and a served path with a method it does not take is 405
// "method_not_allowed" (with Allow): a client that maps "not_found" to "the
// record is gone" must check the code, not only the status, or a wrong base
// URL would read as deleted records.
//
// To let connectors exercise their retry paths, faults can be injected: a
// request with ?fail=503 (any status 400-599) fails with that status, and
// POST /admin/faults {"status": 503, "count": 3, "retry_after_seconds": 1}
// makes the next 3 API requests fail. GET /admin/faults shows what is left,
// DELETE /admin/faults clears it. 429 and 503 answers carry Retry-After.
// GET /healthz answers 200.
package shop

import (
	"net/http"
	"strings"
	"sync"
	"time"
)

// Currency is the only currency the shop sells in.
const Currency = "EUR"

// Server is the shop: its data and its HTTP API. It is safe for concurrent
// use. Create it with [NewServer].
type Server struct {
	mux *http.ServeMux
	now func() time.Time

	mu        sync.Mutex
	last      time.Time // latest modification stamp handed out
	products  table[product]
	customers table[customer]
	orders    table[order]
	fault     fault
}

// Option configures a [Server].
type Option func(*Server)

// WithClock sets the clock used to stamp modifications (default time.Now).
// Stamps stay strictly increasing even if the clock stands still or goes
// back.
func WithClock(now func() time.Time) Option {
	return func(s *Server) { s.now = now }
}

// WithSampleData fills the shop with a few products, customers and orders.
func WithSampleData() Option {
	return func(s *Server) { s.seed() }
}

// NewServer returns an empty shop (see [WithSampleData]) serving its API.
func NewServer(opts ...Option) *Server {
	s := &Server{
		mux:       http.NewServeMux(),
		now:       time.Now,
		products:  newTable[product](),
		customers: newTable[customer](),
		orders:    newTable[order](),
	}
	for _, o := range opts {
		o(s)
	}
	s.routes()
	return s
}

// ServeHTTP serves the shop API.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mux.ServeHTTP(w, r)
}

func (s *Server) routes() {
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	s.mux.HandleFunc("GET /admin/faults", s.getFaults)
	s.mux.HandleFunc("POST /admin/faults", s.setFaults)
	s.mux.HandleFunc("DELETE /admin/faults", s.clearFaults)
	for _, v := range []version{v1, v2} {
		mount(s, v, productResource(s))
		mount(s, v, customerResource(s))
		mount(s, v, orderResource(s))
	}
	s.mux.HandleFunc("/", s.noRoute)
}

// noRoute answers a request that no route matches. "not_found" is kept for
// a record the shop does not have, which a client reads as "the record is
// gone": a path the shop does not serve (a wrong base URL or API version)
// is 404 "no_route", and a path served for other methods is 405
// "method_not_allowed" with an Allow header.
func (s *Server) noRoute(w http.ResponseWriter, r *http.Request) {
	if allow := allowedMethods(s.mux, r); len(allow) > 0 {
		w.Header().Set("Allow", strings.Join(allow, ", "))
		writeError(w, http.StatusMethodNotAllowed, "method_not_allowed",
			r.Method+" "+r.URL.Path+" not allowed; allowed: "+strings.Join(allow, ", "))
		return
	}
	writeError(w, http.StatusNotFound, "no_route", "no route for "+r.Method+" "+r.URL.Path)
}

// allowedMethods returns the methods for which mux routes r's path to a
// pattern other than the catch-all "/".
func allowedMethods(mux *http.ServeMux, r *http.Request) []string {
	var allow []string
	for _, m := range []string{"DELETE", "GET", "HEAD", "PATCH", "POST", "PUT"} {
		probe := *r
		probe.Method = m
		if _, pattern := mux.Handler(&probe); pattern != "/" && pattern != "" {
			allow = append(allow, m)
		}
	}
	return allow
}

// stamp returns a modification time strictly after every earlier one,
// truncated to microseconds so that it survives an RFC 3339 round trip.
// The caller holds s.mu.
func (s *Server) stamp() time.Time {
	t := s.now().UTC().Truncate(time.Microsecond)
	if !t.After(s.last) {
		t = s.last.Add(time.Microsecond)
	}
	s.last = t
	return t
}

func (s *Server) seed() {
	s.mu.Lock()
	defer s.mu.Unlock()
	p1 := s.products.insert(product{Name: "Espresso cup", PriceCents: 650}, s.stamp())
	p2 := s.products.insert(product{Name: "Coffee beans 1 kg", PriceCents: 1890}, s.stamp())
	s.products.insert(product{Name: "Milk jug", PriceCents: 1200}, s.stamp())
	c1 := s.customers.insert(customer{Name: "Ada Lovelace", Email: "ada@example.com"}, s.stamp())
	s.customers.insert(customer{Name: "Alan Turing", Email: "alan@example.com"}, s.stamp())
	s.orders.insert(order{CustomerID: c1, Status: "confirmed", Lines: []line{
		{ProductID: p1, Quantity: 2, PriceCents: 650},
		{ProductID: p2, Quantity: 1, PriceCents: 1890},
	}}, s.stamp())
}
