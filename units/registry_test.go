package units_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/connector-go/connector/units"
)

type tag string

var tagUsage = units.NewUsage[tag]("tag")

func mustRegister[T any](t *testing.T, n *units.Node, u units.Usage[T], model string, v T) {
	t.Helper()
	if err := units.Register(n, u, model, v); err != nil {
		t.Fatalf("Register(%s, %s, %q): %v", n, u, model, err)
	}
}

func lookupTag(t *testing.T, r *units.Registry, version, model string) tag {
	t.Helper()
	v, err := units.Lookup(r, "magento", version, tagUsage, model)
	if err != nil {
		t.Fatalf("Lookup(magento %q, %q): %v", version, model, err)
	}
	return v
}

// magento <- magento 2.3 <- magento 2.4: a unit on a parent serves its
// descendants, a version's own unit wins for it and below.
func TestRegistryVersionChainOverrides(t *testing.T) {
	r := units.NewRegistry()
	m := r.Backend("magento")
	m23 := m.Version("2.3")
	m24 := m23.Version("2.4")

	mustRegister(t, m, tagUsage, "product", "base product")
	mustRegister(t, m, tagUsage, "order", "base order")
	mustRegister(t, m23, tagUsage, "order", "2.3 order")
	mustRegister(t, m24, tagUsage, "customer", "2.4 customer")

	cases := []struct {
		version, model string
		want           tag
	}{
		{"", "product", "base product"},
		{"2.3", "product", "base product"},
		{"2.4", "product", "base product"},
		{"", "order", "base order"},
		{"2.3", "order", "2.3 order"},
		{"2.4", "order", "2.3 order"}, // inherited from 2.3, not from magento
		{"2.4", "customer", "2.4 customer"},
	}
	for _, c := range cases {
		if got := lookupTag(t, r, c.version, c.model); got != c.want {
			t.Errorf("magento %q %s = %q, want %q", c.version, c.model, got, c.want)
		}
	}
	// 2.3 does not see the unit of its child 2.4.
	_, err := units.Lookup(r, "magento", "2.3", tagUsage, "customer")
	if !errors.Is(err, units.ErrNoUnit) {
		t.Errorf("magento 2.3 customer: err = %v, want ErrNoUnit", err)
	}

	// Replacing is explicit and only at the level that has the unit.
	if err := units.Replace(m24, tagUsage, "order", "2.4 order"); !errors.Is(err, units.ErrNoUnit) {
		t.Errorf("Replace on a level without the unit: err = %v, want ErrNoUnit", err)
	}
	if err := units.Replace(m23, tagUsage, "order", "2.3 order v2"); err != nil {
		t.Fatalf("Replace: %v", err)
	}
	if got := lookupTag(t, r, "2.4", "order"); got != "2.3 order v2" {
		t.Errorf("after Replace, 2.4 order = %q", got)
	}
	// A version's own registration overrides its parents'.
	mustRegister(t, m24, tagUsage, "order", "2.4 order")
	if got := lookupTag(t, r, "2.4", "order"); got != "2.4 order" {
		t.Errorf("2.4 override: %q", got)
	}
	if got := lookupTag(t, r, "2.3", "order"); got != "2.3 order v2" {
		t.Errorf("2.4 override leaked to 2.3: %q", got)
	}
}

func TestRegistryDuplicateIsARegistrationError(t *testing.T) {
	r := units.NewRegistry()
	m23 := r.Backend("magento").Version("2.3")
	mustRegister(t, m23, tagUsage, "product", "one")
	err := units.Register(m23, tagUsage, "product", "two")
	if !errors.Is(err, units.ErrDuplicateUnit) {
		t.Fatalf("second Register: err = %v, want ErrDuplicateUnit", err)
	}
	if got := lookupTag(t, r, "2.3", "product"); got != "one" {
		t.Errorf("duplicate registration changed the unit: %q", got)
	}
	// Same usage for another model, or another usage: no conflict.
	mustRegister(t, m23, tagUsage, "order", "x")
	mustRegister(t, m23, units.NewUsage[tag]("other"), "product", "y")
}

func TestRegistryNoUnitErrorNamesTheKey(t *testing.T) {
	r := units.NewRegistry()
	r.Backend("magento").Version("2.3")
	_, err := units.Lookup(r, "magento", "2.3", units.ImporterUsage, "product")
	var nu *units.NoUnitError
	if !errors.As(err, &nu) {
		t.Fatalf("err = %v, want *NoUnitError", err)
	}
	if nu.Type != "magento" || nu.Version != "2.3" || nu.Usage != "importer" || nu.Model != "product" {
		t.Errorf("NoUnitError = %+v", nu)
	}
	for _, s := range []string{"magento 2.3", "importer", "product"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("message %q does not name %q", err, s)
		}
	}
	if _, err := units.Lookup(r, "magento", "9.9", units.ImporterUsage, "product"); !errors.Is(err, units.ErrUnknownBackend) {
		t.Errorf("unknown version: err = %v", err)
	}
}

// A unit for the exact model anywhere in the chain beats a unit for
// AnyModel, which serves the models nobody registered.
func TestRegistryAnyModel(t *testing.T) {
	r := units.NewRegistry()
	m := r.Backend("magento")
	m24 := m.Version("2.3").Version("2.4")
	mustRegister(t, m, tagUsage, "product", "product")
	mustRegister(t, m24, tagUsage, units.AnyModel, "generic 2.4")
	if got := lookupTag(t, r, "2.4", "product"); got != "product" {
		t.Errorf("product = %q", got)
	}
	if got := lookupTag(t, r, "2.4", "invoice"); got != "generic 2.4" {
		t.Errorf("invoice = %q", got)
	}
}

func TestRegistryVersionsAndConflicts(t *testing.T) {
	r := units.NewRegistry()
	m := r.Backend("magento")
	m23 := m.Version("2.3")
	if m.Version("2.3") != m23 || r.Backend("magento") != m {
		t.Error("declaring again must return the same node")
	}
	m23.Version("2.4")
	if got := strings.Join(r.Versions("magento"), ","); got != ",2.3,2.4" {
		t.Errorf("Versions = %q", got)
	}
	defer func() {
		if recover() == nil {
			t.Error("declaring 2.4 under another parent must panic")
		}
	}()
	m.Version("2.4")
}

func TestRegistryRejectsNilAndZeroUsage(t *testing.T) {
	r := units.NewRegistry()
	m := r.Backend("shop")
	if err := units.Register(m, units.ImporterUsage, "product", nil); !errors.Is(err, units.ErrInvalidUnit) {
		t.Errorf("nil unit: %v, want ErrInvalidUnit", err)
	}
	if err := units.Register(m, units.Usage[tag]{}, "product", "x"); !errors.Is(err, units.ErrInvalidUnit) {
		t.Errorf("zero usage: %v, want ErrInvalidUnit", err)
	}
	if _, err := units.Lookup(r, "shop", "", units.ImporterUsage, "product"); !errors.Is(err, units.ErrNoUnit) {
		t.Errorf("a refused registration registered something: %v", err)
	}
}

// Two usages with the same name but different types: the lookup reports it.
func TestRegistryUsageTypeMismatch(t *testing.T) {
	r := units.NewRegistry()
	m := r.Backend("shop")
	mustRegister(t, m, units.NewUsage[string]("thing"), "p", "s")
	_, err := units.Lookup(r, "shop", "", units.NewUsage[int]("thing"), "p")
	if !errors.Is(err, units.ErrUnitType) {
		t.Errorf("err = %v, want ErrUnitType", err)
	}
}

// Lookups are safe while units are registered (run with -race).
func TestRegistryConcurrentLookups(t *testing.T) {
	r := units.NewRegistry()
	m := r.Backend("magento")
	m24 := m.Version("2.3").Version("2.4")
	mustRegister(t, m, tagUsage, "product", "base")
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 100 {
			if err := units.Register(m24, tagUsage, fmt.Sprint("model", i), "x"); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for range 100 {
		if got := lookupTag(t, r, "2.4", "product"); got != "base" {
			t.Fatalf("got %q", got)
		}
	}
	<-done
}
