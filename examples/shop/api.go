package shop

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"time"
)

type version string

const (
	v1 version = "v1"
	v2 version = "v2"
)

const (
	defaultPerPage = 20
	maxPerPage     = 100
	maxBody        = 1 << 20
)

// row is one stored record with its id and modification time.
type row[T any] struct {
	id       int64
	modified time.Time
	v        T
}

// table holds the records of one kind. Callers hold Server.mu.
type table[T any] struct {
	next int64
	rows map[int64]*row[T]
}

func newTable[T any]() table[T] { return table[T]{rows: map[int64]*row[T]{}} }

func (t *table[T]) insert(v T, at time.Time) int64 {
	t.next++
	t.rows[t.next] = &row[T]{id: t.next, modified: at, v: v}
	return t.next
}

// apiError is an error answer: status, machine-readable code, message.
type apiError struct {
	status  int
	code    string
	message string
}

func (e *apiError) Error() string { return e.code + ": " + e.message }

func invalid(format string, args ...any) error {
	return &apiError{http.StatusUnprocessableEntity, "invalid", fmt.Sprintf(format, args...)}
}

// resource describes one kind of record and how each API version shows it.
type resource[T any] struct {
	name  string // plural, in the path: "products"
	one   string // singular, in messages: "product"
	table *table[T]
	// encode renders a record in an API version.
	encode func(v version, r *row[T]) any
	// decode reads a request body in an API version onto base (the zero
	// value for POST and PUT, the stored record for PATCH).
	decode func(v version, body []byte, base T) (T, error)
	// prepare validates and completes a record before it is stored. It runs
	// with Server.mu held and may look at other tables.
	prepare func(rec *T) error
	// inUse reports whether other records still refer to id (delete is then
	// refused with 409). It runs with Server.mu held. Optional.
	inUse func(id int64) bool
}

// mount registers the six routes of res under /{v}/{res.name}.
func mount[T any](s *Server, v version, res resource[T]) {
	base := "/" + string(v) + "/" + res.name
	s.mux.HandleFunc("GET "+base, s.api(func(w http.ResponseWriter, r *http.Request) { list(s, v, res, w, r) }))
	s.mux.HandleFunc("GET "+base+"/{id}", s.api(func(w http.ResponseWriter, r *http.Request) { read(s, v, res, w, r) }))
	s.mux.HandleFunc("POST "+base, s.api(func(w http.ResponseWriter, r *http.Request) { write(s, v, res, w, r, "POST") }))
	s.mux.HandleFunc("PUT "+base+"/{id}", s.api(func(w http.ResponseWriter, r *http.Request) { write(s, v, res, w, r, "PUT") }))
	s.mux.HandleFunc("PATCH "+base+"/{id}", s.api(func(w http.ResponseWriter, r *http.Request) { write(s, v, res, w, r, "PATCH") }))
	s.mux.HandleFunc("DELETE "+base+"/{id}", s.api(func(w http.ResponseWriter, r *http.Request) { remove(s, res, w, r) }))
}

func list[T any](s *Server, v version, res resource[T], w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	since, err := timeParam(q.Get("updated_since"), "updated_since")
	if err != nil {
		fail(w, err)
		return
	}
	before, err := timeParam(q.Get("updated_before"), "updated_before")
	if err != nil {
		fail(w, err)
		return
	}
	page, err := intParam(q.Get("page"), "page", 1, 1, 1<<31)
	if err != nil {
		fail(w, err)
		return
	}
	perPage, err := intParam(q.Get("per_page"), "per_page", defaultPerPage, 1, maxPerPage)
	if err != nil {
		fail(w, err)
		return
	}

	s.mu.Lock()
	var rows []*row[T]
	for _, rw := range res.table.rows {
		if !since.IsZero() && rw.modified.Before(since) {
			continue
		}
		if !before.IsZero() && !rw.modified.Before(before) {
			continue
		}
		rows = append(rows, rw)
	}
	slices.SortFunc(rows, func(a, b *row[T]) int {
		if c := a.modified.Compare(b.modified); c != 0 {
			return c
		}
		return cmp.Compare(a.id, b.id)
	})
	total := len(rows)
	start := min((page-1)*perPage, total)
	end := min(start+perPage, total)
	items := make([]any, 0, end-start)
	for _, rw := range rows[start:end] {
		items = append(items, res.encode(v, rw))
	}
	s.mu.Unlock()

	if v == v1 {
		writeJSON(w, http.StatusOK, map[string]any{"items": items, "page": page, "per_page": perPage, "total": total})
		return
	}
	var next *int
	if end < total {
		n := page + 1
		next = &n
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"data": items,
		"meta": map[string]any{"page": page, "per_page": perPage, "total": total, "next_page": next},
	})
}

func read[T any](s *Server, v version, res resource[T], w http.ResponseWriter, r *http.Request) {
	id, err := idParam(r)
	if err != nil {
		fail(w, err)
		return
	}
	s.mu.Lock()
	rw, ok := res.table.rows[id]
	var out any
	if ok {
		out = res.encode(v, rw)
	}
	s.mu.Unlock()
	if !ok {
		fail(w, notFound(res.one, id))
		return
	}
	writeJSON(w, http.StatusOK, out)
}

func write[T any](s *Server, v version, res resource[T], w http.ResponseWriter, r *http.Request, method string) {
	var id int64
	if method != "POST" {
		var err error
		if id, err = idParam(r); err != nil {
			fail(w, err)
			return
		}
	}
	body, err := readAll(w, r)
	if err != nil {
		fail(w, err)
		return
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	var base T
	existing, ok := res.table.rows[id]
	if method != "POST" && !ok {
		fail(w, notFound(res.one, id))
		return
	}
	if method == "PATCH" {
		base = existing.v
	}
	rec, err := res.decode(v, body, base)
	if err != nil {
		fail(w, err)
		return
	}
	if err := res.prepare(&rec); err != nil {
		fail(w, err)
		return
	}
	status := http.StatusOK
	if method == "POST" {
		id = res.table.insert(rec, s.stamp())
		status = http.StatusCreated
		w.Header().Set("Location", "/"+string(v)+"/"+res.name+"/"+strconv.FormatInt(id, 10))
	} else {
		existing.v = rec
		existing.modified = s.stamp()
	}
	writeJSON(w, status, res.encode(v, res.table.rows[id]))
}

func remove[T any](s *Server, res resource[T], w http.ResponseWriter, r *http.Request) {
	id, err := idParam(r)
	if err != nil {
		fail(w, err)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := res.table.rows[id]; !ok {
		fail(w, notFound(res.one, id))
		return
	}
	if res.inUse != nil && res.inUse(id) {
		fail(w, &apiError{http.StatusConflict, "in_use", fmt.Sprintf("%s %d is used by an order", res.one, id)})
		return
	}
	delete(res.table.rows, id)
	w.WriteHeader(http.StatusNoContent)
}

func readAll(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		return nil, &apiError{http.StatusBadRequest, "bad_request", "reading body: " + err.Error()}
	}
	return body, nil
}

// decodeStrict decodes body into dst, refusing unknown fields and trailing
// data: a client that sends v1 field names to v2 hears about it.
func decodeStrict(body []byte, dst any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return &apiError{http.StatusBadRequest, "bad_request", "decoding body: " + err.Error()}
	}
	if dec.More() {
		return &apiError{http.StatusBadRequest, "bad_request", "decoding body: trailing data"}
	}
	return nil
}

func notFound(what string, id int64) error {
	return &apiError{http.StatusNotFound, "not_found", fmt.Sprintf("%s %d not found", what, id)}
}

func idParam(r *http.Request) (int64, error) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		return 0, &apiError{http.StatusBadRequest, "bad_request", "id must be a positive integer"}
	}
	return id, nil
}

func timeParam(s, name string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, &apiError{http.StatusBadRequest, "bad_request", name + " must be an RFC 3339 time"}
	}
	return t, nil
}

func intParam(s, name string, def, lo, hi int) (int, error) {
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < lo || n > hi {
		return 0, &apiError{http.StatusBadRequest, "bad_request", fmt.Sprintf("%s must be an integer in [%d, %d]", name, lo, hi)}
	}
	return n, nil
}

// errorBody is the JSON shape of every error answer.
type errorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func fail(w http.ResponseWriter, err error) {
	var ae *apiError
	if !errors.As(err, &ae) {
		ae = &apiError{http.StatusInternalServerError, "internal", err.Error()}
	}
	writeError(w, ae.status, ae.code, ae.message)
}

func writeError(w http.ResponseWriter, status int, code, message string) {
	var b errorBody
	b.Error.Code, b.Error.Message = code, message
	writeJSON(w, status, b)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
