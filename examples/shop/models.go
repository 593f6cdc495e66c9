package shop

import (
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The shop's own model. Money is in cents of [Currency].
type product struct {
	Name       string
	PriceCents int64
}

type customer struct {
	Name  string
	Email string
}

type order struct {
	CustomerID int64
	Status     string
	Lines      []line
}

type line struct {
	ProductID  int64
	Quantity   int64
	PriceCents int64 // -1 on input: take the product's current price
}

var orderStatuses = []string{"draft", "confirmed", "shipped", "cancelled"}

// money is the v2 representation of an amount.
type money struct {
	Amount   string `json:"amount"`
	Currency string `json:"currency"`
}

type ref struct {
	ID int64 `json:"id"`
}

func moneyOf(cents int64) money {
	return money{Amount: fmt.Sprintf("%d.%02d", cents/100, cents%100), Currency: Currency}
}

func (m money) cents(field string) (int64, error) {
	if m.Currency != Currency {
		return 0, invalid("%s.currency must be %q", field, Currency)
	}
	f, err := strconv.ParseFloat(m.Amount, 64)
	if err != nil || f < 0 || math.IsInf(f, 0) {
		return 0, invalid("%s.amount must be a non-negative decimal string", field)
	}
	return int64(math.Round(f * 100)), nil
}

func centsOf(price float64, field string) (int64, error) {
	if price < 0 || math.IsNaN(price) || math.IsInf(price, 0) {
		return 0, invalid("%s must be a non-negative number", field)
	}
	return int64(math.Round(price * 100)), nil
}

func stampString(t time.Time) string { return t.Format(time.RFC3339Nano) }

// ---- products ----

type productV1 struct {
	ID        int64   `json:"id"`
	Name      string  `json:"name"`
	Price     float64 `json:"price"`
	UpdatedAt string  `json:"updated_at"`
}

type productV2 struct {
	ID        int64  `json:"id"`
	Title     string `json:"title"`
	UnitPrice money  `json:"unit_price"`
	Modified  string `json:"modified"`
}

// Input shapes: pointers tell "absent" (keep, for PATCH) from "zero".
// id and the modification time are accepted and ignored, so a client may
// send back what it read.
type productV1In struct {
	ID        *int64   `json:"id"`
	Name      *string  `json:"name"`
	Price     *float64 `json:"price"`
	UpdatedAt *string  `json:"updated_at"`
}

type productV2In struct {
	ID        *int64  `json:"id"`
	Title     *string `json:"title"`
	UnitPrice *money  `json:"unit_price"`
	Modified  *string `json:"modified"`
}

func productResource(s *Server) resource[product] {
	return resource[product]{
		name: "products", one: "product", table: &s.products,
		encode: func(v version, r *row[product]) any {
			if v == v1 {
				return productV1{ID: r.id, Name: r.v.Name, Price: float64(r.v.PriceCents) / 100, UpdatedAt: stampString(r.modified)}
			}
			return productV2{ID: r.id, Title: r.v.Name, UnitPrice: moneyOf(r.v.PriceCents), Modified: stampString(r.modified)}
		},
		decode: func(v version, body []byte, p product) (product, error) {
			if v == v1 {
				var in productV1In
				if err := decodeStrict(body, &in); err != nil {
					return p, err
				}
				if in.Name != nil {
					p.Name = *in.Name
				}
				if in.Price != nil {
					c, err := centsOf(*in.Price, "price")
					if err != nil {
						return p, err
					}
					p.PriceCents = c
				}
				return p, nil
			}
			var in productV2In
			if err := decodeStrict(body, &in); err != nil {
				return p, err
			}
			if in.Title != nil {
				p.Name = *in.Title
			}
			if in.UnitPrice != nil {
				c, err := in.UnitPrice.cents("unit_price")
				if err != nil {
					return p, err
				}
				p.PriceCents = c
			}
			return p, nil
		},
		prepare: func(p *product) error {
			if strings.TrimSpace(p.Name) == "" {
				return invalid("a product needs a name (v1 name, v2 title)")
			}
			return nil
		},
		inUse: func(id int64) bool {
			for _, o := range s.orders.rows {
				for _, l := range o.v.Lines {
					if l.ProductID == id {
						return true
					}
				}
			}
			return false
		},
	}
}

// ---- customers ----

type customerV1 struct {
	ID        int64  `json:"id"`
	Name      string `json:"name"`
	Email     string `json:"email"`
	UpdatedAt string `json:"updated_at"`
}

type customerV2 struct {
	ID           int64  `json:"id"`
	DisplayName  string `json:"display_name"`
	EmailAddress string `json:"email_address"`
	Modified     string `json:"modified"`
}

type customerV1In struct {
	ID        *int64  `json:"id"`
	Name      *string `json:"name"`
	Email     *string `json:"email"`
	UpdatedAt *string `json:"updated_at"`
}

type customerV2In struct {
	ID           *int64  `json:"id"`
	DisplayName  *string `json:"display_name"`
	EmailAddress *string `json:"email_address"`
	Modified     *string `json:"modified"`
}

func customerResource(s *Server) resource[customer] {
	return resource[customer]{
		name: "customers", one: "customer", table: &s.customers,
		encode: func(v version, r *row[customer]) any {
			if v == v1 {
				return customerV1{ID: r.id, Name: r.v.Name, Email: r.v.Email, UpdatedAt: stampString(r.modified)}
			}
			return customerV2{ID: r.id, DisplayName: r.v.Name, EmailAddress: r.v.Email, Modified: stampString(r.modified)}
		},
		decode: func(v version, body []byte, c customer) (customer, error) {
			if v == v1 {
				var in customerV1In
				if err := decodeStrict(body, &in); err != nil {
					return c, err
				}
				setIf(&c.Name, in.Name)
				setIf(&c.Email, in.Email)
				return c, nil
			}
			var in customerV2In
			if err := decodeStrict(body, &in); err != nil {
				return c, err
			}
			setIf(&c.Name, in.DisplayName)
			setIf(&c.Email, in.EmailAddress)
			return c, nil
		},
		prepare: func(c *customer) error {
			if !strings.Contains(c.Email, "@") {
				return invalid("a customer needs an e-mail address (v1 email, v2 email_address)")
			}
			return nil
		},
		inUse: func(id int64) bool {
			for _, o := range s.orders.rows {
				if o.v.CustomerID == id {
					return true
				}
			}
			return false
		},
	}
}

func setIf[T any](dst *T, src *T) {
	if src != nil {
		*dst = *src
	}
}

// ---- orders ----

type lineV1 struct {
	ProductID int64    `json:"product_id"`
	Quantity  int64    `json:"quantity"`
	Price     *float64 `json:"price,omitempty"`
}

type orderV1 struct {
	ID         int64    `json:"id"`
	CustomerID int64    `json:"customer_id"`
	Status     string   `json:"status"`
	Lines      []lineV1 `json:"lines"`
	Total      float64  `json:"total"`
	UpdatedAt  string   `json:"updated_at"`
}

type itemV2 struct {
	Product   ref    `json:"product"`
	Qty       int64  `json:"qty"`
	UnitPrice *money `json:"unit_price,omitempty"`
}

type orderV2 struct {
	ID       int64    `json:"id"`
	Customer ref      `json:"customer"`
	State    string   `json:"state"`
	Items    []itemV2 `json:"items"`
	Total    money    `json:"total"`
	Modified string   `json:"modified"`
}

type orderV1In struct {
	ID         *int64    `json:"id"`
	CustomerID *int64    `json:"customer_id"`
	Status     *string   `json:"status"`
	Lines      *[]lineV1 `json:"lines"`
	Total      *float64  `json:"total"`
	UpdatedAt  *string   `json:"updated_at"`
}

type orderV2In struct {
	ID       *int64    `json:"id"`
	Customer *ref      `json:"customer"`
	State    *string   `json:"state"`
	Items    *[]itemV2 `json:"items"`
	Total    *money    `json:"total"`
	Modified *string   `json:"modified"`
}

func orderTotal(o order) int64 {
	var t int64
	for _, l := range o.Lines {
		t += l.Quantity * l.PriceCents
	}
	return t
}

func orderResource(s *Server) resource[order] {
	return resource[order]{
		name: "orders", one: "order", table: &s.orders,
		encode: func(v version, r *row[order]) any {
			if v == v1 {
				out := orderV1{ID: r.id, CustomerID: r.v.CustomerID, Status: r.v.Status, Lines: []lineV1{},
					Total: float64(orderTotal(r.v)) / 100, UpdatedAt: stampString(r.modified)}
				for _, l := range r.v.Lines {
					p := float64(l.PriceCents) / 100
					out.Lines = append(out.Lines, lineV1{ProductID: l.ProductID, Quantity: l.Quantity, Price: &p})
				}
				return out
			}
			out := orderV2{ID: r.id, Customer: ref{r.v.CustomerID}, State: r.v.Status, Items: []itemV2{},
				Total: moneyOf(orderTotal(r.v)), Modified: stampString(r.modified)}
			for _, l := range r.v.Lines {
				m := moneyOf(l.PriceCents)
				out.Items = append(out.Items, itemV2{Product: ref{l.ProductID}, Qty: l.Quantity, UnitPrice: &m})
			}
			return out
		},
		decode: func(v version, body []byte, o order) (order, error) {
			if v == v1 {
				var in orderV1In
				if err := decodeStrict(body, &in); err != nil {
					return o, err
				}
				setIf(&o.CustomerID, in.CustomerID)
				setIf(&o.Status, in.Status)
				if in.Lines != nil {
					o.Lines = make([]line, 0, len(*in.Lines))
					for i, l := range *in.Lines {
						nl := line{ProductID: l.ProductID, Quantity: l.Quantity, PriceCents: -1}
						if l.Price != nil {
							c, err := centsOf(*l.Price, fmt.Sprintf("lines[%d].price", i))
							if err != nil {
								return o, err
							}
							nl.PriceCents = c
						}
						o.Lines = append(o.Lines, nl)
					}
				}
				return o, nil
			}
			var in orderV2In
			if err := decodeStrict(body, &in); err != nil {
				return o, err
			}
			if in.Customer != nil {
				o.CustomerID = in.Customer.ID
			}
			setIf(&o.Status, in.State)
			if in.Items != nil {
				o.Lines = make([]line, 0, len(*in.Items))
				for i, it := range *in.Items {
					nl := line{ProductID: it.Product.ID, Quantity: it.Qty, PriceCents: -1}
					if it.UnitPrice != nil {
						c, err := it.UnitPrice.cents(fmt.Sprintf("items[%d].unit_price", i))
						if err != nil {
							return o, err
						}
						nl.PriceCents = c
					}
					o.Lines = append(o.Lines, nl)
				}
			}
			return o, nil
		},
		prepare: func(o *order) error {
			if _, ok := s.customers.rows[o.CustomerID]; !ok {
				return invalid("customer %d does not exist", o.CustomerID)
			}
			if o.Status == "" {
				o.Status = "draft"
			}
			if !slices.Contains(orderStatuses, o.Status) {
				return invalid("status must be one of %v", orderStatuses)
			}
			if len(o.Lines) == 0 {
				return invalid("an order needs at least one line")
			}
			lines := make([]line, len(o.Lines)) // never write into the stored slice
			for i, l := range o.Lines {
				p, ok := s.products.rows[l.ProductID]
				if !ok {
					return invalid("line %d: product %d does not exist", i, l.ProductID)
				}
				if l.Quantity <= 0 {
					return invalid("line %d: quantity must be positive", i)
				}
				if l.PriceCents < 0 {
					l.PriceCents = p.v.PriceCents
				}
				lines[i] = l
			}
			o.Lines = lines
			return nil
		},
	}
}

// ---- fault injection ----

// fault is the state behind /admin/faults: the next Count API requests
// fail with Status.
type fault struct {
	Status            int `json:"status"`
	Count             int `json:"count"`
	RetryAfterSeconds int `json:"retry_after_seconds"`
}

// api wraps an API handler with fault injection.
func (s *Server) api(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if f := r.URL.Query().Get("fail"); f != "" {
			code, err := strconv.Atoi(f)
			if err != nil || code < 400 || code > 599 {
				writeError(w, http.StatusBadRequest, "bad_request", "fail must be a status in [400, 599]")
				return
			}
			injected(w, code, 1)
			return
		}
		s.mu.Lock()
		f := s.fault
		if f.Count > 0 {
			s.fault.Count--
		}
		s.mu.Unlock()
		if f.Count > 0 {
			injected(w, f.Status, f.RetryAfterSeconds)
			return
		}
		h(w, r)
	}
}

func injected(w http.ResponseWriter, status, retryAfter int) {
	if status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", strconv.Itoa(max(retryAfter, 0)))
	}
	writeError(w, status, "injected_fault", "fault injected for testing")
}

func (s *Server) getFaults(w http.ResponseWriter, _ *http.Request) {
	s.mu.Lock()
	f := s.fault
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, f)
}

func (s *Server) setFaults(w http.ResponseWriter, r *http.Request) {
	body, err := readAll(w, r)
	if err != nil {
		fail(w, err)
		return
	}
	f := fault{Status: http.StatusServiceUnavailable, Count: 1, RetryAfterSeconds: 1}
	if err := decodeStrict(body, &f); err != nil {
		fail(w, err)
		return
	}
	if f.Status < 400 || f.Status > 599 || f.Count < 0 || f.RetryAfterSeconds < 0 {
		fail(w, invalid("status must be in [400, 599], count and retry_after_seconds >= 0"))
		return
	}
	s.mu.Lock()
	s.fault = f
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, f)
}

func (s *Server) clearFaults(w http.ResponseWriter, _ *http.Request) {
	s.mu.Lock()
	s.fault = fault{}
	s.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}
