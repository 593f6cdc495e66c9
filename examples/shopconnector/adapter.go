package shopconnector

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/connector-go/connector/examples/catalog"
	"github.com/connector-go/connector/job"
	"github.com/connector-go/connector/units"
)

// UserAgent is sent with every request of the adapters, so that the shop
// and the catalog can tell the connector's calls from a user's.
const UserAgent = "connector-go/shopconnector"

// resources maps a model to its URL segment, in the shop and in the catalog.
var resources = map[string]string{"product": "products", "customer": "customers", "order": "orders"}

// client is the HTTP JSON plumbing both adapters share. It turns transport
// failures into the outcomes the units.Adapter contract asks for:
//
//   - connection errors, timeouts, 5xx: job.Retry (the job runs again later);
//   - 429 and 503 with Retry-After (seconds or a date): job.RetryAfter;
//   - 404 whose body says the record does not exist (error code
//     "not_found") on a record's URL (read, write, delete by id):
//     units.Missing (the record is gone);
//   - the same 404 on the collection's URL (a search's list, a create's
//     POST): a permanent error quoting the answer. That URL names no record
//     to be gone: the collection itself does not exist there (a wrong model,
//     a parent that is gone), and Missing would make a synchronizer unbind a
//     record or create it again;
//   - any other 404 (the server, or a proxy in front of it, does not serve
//     the path: a wrong base URL or API version): a permanent error naming
//     the URL. Reading it as "the record is gone" would make a Read or Write
//     of a bound record unbind it or create it again, and a Delete succeed
//     without deleting; retrying would not fix the path either;
//   - any other 4xx: a permanent error quoting the answer (the job is
//     dead-lettered: sending it again would fail the same way).
type client struct {
	http  *http.Client
	base  string // e.g. http://shop:8081/v1
	model string
	// origin returns the X-Origin header of a write (catalog only).
	origin func(ctx context.Context) string
	// recordMissing tells from the body of a 404 whether the server says
	// the record of the path (or, on the collection's URL, the collection)
	// does not exist. Each system says it its own way.
	recordMissing func(body []byte) bool
}

// shopRecordMissing: the shop answers {"error": {"code": "not_found"}} for a
// record it does not have, and "no_route" for a path it does not serve.
func shopRecordMissing(body []byte) bool {
	var e struct {
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	return json.Unmarshal(body, &e) == nil && e.Error.Code == "not_found"
}

// catalogRecordMissing: the catalog answers {"error": "...", "code":
// "not_found"} for a record it does not have, "no_route" for a path it does
// not serve.
func catalogRecordMissing(body []byte) bool {
	var e struct {
		Code string `json:"code"`
	}
	return json.Unmarshal(body, &e) == nil && e.Code == "not_found"
}

// do calls method on c.base+path. id is the record that path names (a
// read, write or delete by id), "" for the collection's URL (a list, a
// create): only a record's not-found is units.Missing (see client).
func (c *client) do(ctx context.Context, method, path, id string, body any, out any) error {
	what := method + " " + c.base + path // for errors
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("encode %s: %w", what, err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("User-Agent", UserAgent)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.origin != nil && method != http.MethodGet {
		if o := c.origin(ctx); o != "" {
			req.Header.Set(catalog.OriginHeader, o)
		}
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return job.Retry(fmt.Errorf("%s: %w", what, err))
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return job.Retry(fmt.Errorf("%s: reading answer: %w", what, err))
	}
	switch s := resp.StatusCode; {
	case s == http.StatusNotFound && c.recordMissing(data) && id != "":
		return units.Missing(c.model, id)
	case s == http.StatusNotFound && c.recordMissing(data):
		// No record in the URL: the collection is what is not found.
		return fmt.Errorf("%s: %s: the %s collection does not exist at this URL (a wrong model, or a parent that is gone; no record is missing): %s",
			what, resp.Status, c.model, excerpt(data))
	case s == http.StatusNotFound:
		// Not the record's not-found: no such route (see client).
		return fmt.Errorf("%s: %s without the record's not-found code: the server does not serve this path (check the base URL and API version): %s",
			what, resp.Status, excerpt(data))
	case s == http.StatusTooManyRequests || s >= 500:
		err := fmt.Errorf("%s: %s: %s", what, resp.Status, excerpt(data))
		ra := resp.Header.Get("Retry-After") // seconds, or an HTTP date
		d, _ := time.ParseDuration(ra + "s")
		at, _ := http.ParseTime(ra)
		return job.RetryAfter(err, max(d, time.Until(at), 0)) // 0: the retry pattern's delay
	case s >= 400:
		return fmt.Errorf("%s: %s: %s", what, resp.Status, excerpt(data))
	}
	if out == nil || len(data) == 0 {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%s: decoding answer: %w", what, err)
	}
	return nil
}

// excerpt is at most 512 bytes of an answer's body, for an error: a
// proxy's HTML page must not fill the job's record and dead letter.
func excerpt(body []byte) string {
	body = bytes.TrimSpace(body)
	if len(body) > 512 {
		return strings.ToValidUTF8(string(body[:512]), "") + "... (" + strconv.Itoa(len(body)) + " bytes)"
	}
	return string(body)
}

// idOf renders a JSON id (a number in the shop, a string in the catalog).
func idOf(v any) string {
	switch x := v.(type) {
	case float64:
		return strconv.FormatInt(int64(x), 10)
	case string:
		return x
	}
	return fmt.Sprint(v)
}

// ShopAdapter is the units.Adapter of one model of a shop instance, over
// the shop's HTTP API (examples/shop). The API version is a path segment;
// what differs between versions is how lists are paged, which is why v2
// registers its own AdapterFactory (see ListKey).
//
// Search understands one filter, "updated_since" (a time.Time or an RFC 3339
// string): records modified at or after it. Any Offset and Limit (0: every
// record) work, over pages of the largest size up to 100 dividing both.
type ShopAdapter struct {
	c client
	// ListKey is the field of a list answer holding the records: "items"
	// in v1, "data" in v2.
	ListKey string
	// Settle, if > 0, leaves out of Search the records modified less than
	// Settle ago; the next search finds them. See SearchSettle.
	Settle time.Duration
}

// SearchSettle is the Settle of the adapters Units builds. An export that
// creates a shop record binds it a few milliseconds after the create; a
// batch import that found the record in between would not see the binding
// and would import it as a new catalog record. Searching only records
// older than a second closes that window (at the cost of a second of
// latency for new shop records).
const SearchSettle = time.Second

// NewShopAdapter returns the adapter of model on the shop at baseURL
// (e.g. "http://127.0.0.1:8081"), API version version ("v1", "v2").
func NewShopAdapter(hc *http.Client, baseURL, version, model, listKey string) (*ShopAdapter, error) {
	if resources[model] == "" {
		return nil, fmt.Errorf("shopconnector: no shop resource for model %q", model)
	}
	if hc == nil {
		hc = http.DefaultClient
	}
	c := client{http: hc, base: baseURL + "/" + version + "/" + resources[model], model: model, recordMissing: shopRecordMissing}
	return &ShopAdapter{c: c, ListKey: listKey}, nil
}

// Search returns the ids of the records matching q, oldest change first.
func (a *ShopAdapter) Search(ctx context.Context, q units.Query) ([]string, error) {
	per := 100 // the shop pages by page number: pages must fit Offset and Limit
	for q.Offset%per != 0 || max(q.Limit, 0)%per != 0 {
		per--
	}
	v := url.Values{"per_page": {strconv.Itoa(per)}}
	switch s := q.Filters["updated_since"].(type) {
	case time.Time:
		v.Set("updated_since", s.UTC().Format(time.RFC3339Nano))
	case string:
		v.Set("updated_since", s)
	}
	if a.Settle > 0 {
		v.Set("updated_before", time.Now().Add(-a.Settle).UTC().Format(time.RFC3339Nano))
	}
	var ids []string
	for page := q.Offset/per + 1; ; page++ {
		v.Set("page", strconv.Itoa(page))
		var ans map[string]json.RawMessage
		if err := a.c.do(ctx, http.MethodGet, "?"+v.Encode(), "", nil, &ans); err != nil {
			return nil, err
		}
		var items []map[string]any
		if err := json.Unmarshal(ans[a.ListKey], &items); err != nil {
			return nil, fmt.Errorf("shop list: field %q: %w", a.ListKey, err)
		}
		for _, it := range items {
			ids = append(ids, idOf(it["id"]))
		}
		if len(items) < per || q.Limit > 0 && len(ids) >= q.Limit {
			return ids, nil
		}
	}
}

// Read returns the record with every field (the shop has no field selection).
func (a *ShopAdapter) Read(ctx context.Context, id string, _ []string) (units.Record, error) {
	var rec units.Record
	err := a.c.do(ctx, http.MethodGet, "/"+url.PathEscape(id), id, nil, &rec)
	return rec, err
}

// Create creates a record and returns its id.
func (a *ShopAdapter) Create(ctx context.Context, rec units.Record) (string, error) {
	id, _, err := a.CreateReturning(ctx, rec)
	return id, err
}

// CreateReturning is Create, with the record as the shop stored it (its
// answer, with its modification time): the Exporter binds with that time
// as the sync date (units.ReturningWriter).
func (a *ShopAdapter) CreateReturning(ctx context.Context, rec units.Record) (string, units.Record, error) {
	var out units.Record
	if err := a.c.do(ctx, http.MethodPost, "", "", rec, &out); err != nil {
		return "", nil, err
	}
	return idOf(out["id"]), out, nil
}

// Write changes the fields of rec (PATCH).
func (a *ShopAdapter) Write(ctx context.Context, id string, rec units.Record) error {
	_, err := a.WriteReturning(ctx, id, rec)
	return err
}

// WriteReturning is Write, with the record as the shop stored it.
func (a *ShopAdapter) WriteReturning(ctx context.Context, id string, rec units.Record) (units.Record, error) {
	var out units.Record
	err := a.c.do(ctx, http.MethodPatch, "/"+url.PathEscape(id), id, rec, &out)
	return out, err
}

// Delete deletes a record.
func (a *ShopAdapter) Delete(ctx context.Context, id string) error {
	return a.c.do(ctx, http.MethodDelete, "/"+url.PathEscape(id), id, nil, nil)
}

// CatalogAdapter is the units.Adapter of one model of the catalog
// (examples/catalog): the LOCAL side. Its writes carry the origin of the
// context (units.OriginFrom) in the X-Origin header, which the catalog
// copies into the events it publishes: that is how an import does not come
// back as an export.
type CatalogAdapter struct{ c client }

// NewCatalogAdapter returns the adapter of model on the catalog at baseURL.
func NewCatalogAdapter(hc *http.Client, baseURL, model string) (*CatalogAdapter, error) {
	if resources[model] == "" {
		return nil, fmt.Errorf("shopconnector: no catalog resource for model %q", model)
	}
	if hc == nil {
		hc = http.DefaultClient
	}
	c := client{http: hc, base: baseURL + "/" + resources[model], model: model, origin: units.OriginFrom, recordMissing: catalogRecordMissing}
	return &CatalogAdapter{c: c}, nil
}

// Search pages through the catalog by offset and limit (no filters).
func (a *CatalogAdapter) Search(ctx context.Context, q units.Query) ([]string, error) {
	v := url.Values{"offset": {strconv.Itoa(q.Offset)}, "limit": {strconv.Itoa(q.Limit)}}
	var ans struct {
		Items []map[string]any `json:"items"`
	}
	if err := a.c.do(ctx, http.MethodGet, "?"+v.Encode(), "", nil, &ans); err != nil {
		return nil, err
	}
	ids := make([]string, 0, len(ans.Items))
	for _, it := range ans.Items {
		ids = append(ids, idOf(it["id"]))
	}
	return ids, nil
}

// Read returns the record with every field.
func (a *CatalogAdapter) Read(ctx context.Context, id string, _ []string) (units.Record, error) {
	var rec units.Record
	err := a.c.do(ctx, http.MethodGet, "/"+url.PathEscape(id), id, nil, &rec)
	return rec, err
}

// Create creates a record and returns its id.
func (a *CatalogAdapter) Create(ctx context.Context, rec units.Record) (string, error) {
	var out units.Record
	if err := a.c.do(ctx, http.MethodPost, "", "", rec, &out); err != nil {
		return "", err
	}
	return idOf(out["id"]), nil
}

// Write changes the fields of rec.
func (a *CatalogAdapter) Write(ctx context.Context, id string, rec units.Record) error {
	return a.c.do(ctx, http.MethodPatch, "/"+url.PathEscape(id), id, rec, nil)
}

// Delete deletes a record.
func (a *CatalogAdapter) Delete(ctx context.Context, id string) error {
	return a.c.do(ctx, http.MethodDelete, "/"+url.PathEscape(id), id, nil, nil)
}
