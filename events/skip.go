package events

// Predicate decides about an event; as a skip_if, true means "skip it".
// Predicates compose with And, Or and Not.
type Predicate func(ev Event) bool

// SkipIf turns a plain function into a Predicate (for symmetry with the
// seed's @skip_if decorator).
func SkipIf(f func(ev Event) bool) Predicate { return Predicate(f) }

// SkipOrigin is true for events caused by one of backendIDs: the echo
// suppression of an export listener. An importer of backend "shop-1" writes
// with units.WithOrigin(ctx, "shop-1"); the events of those writes carry
// Origin "shop-1"; the export listener for "shop-1" registered with
// WithSkipIf(SkipOrigin("shop-1")) does not send the record back.
func SkipOrigin(backendIDs ...string) Predicate {
	set := make(map[string]bool, len(backendIDs))
	for _, id := range backendIDs {
		set[id] = true
	}
	return func(ev Event) bool { return ev.Origin != "" && set[ev.Origin] }
}

// FieldsUnchanged is true for an event that lists its changed fields and
// none of them is among fields: a write that touched nothing the export
// maps (see units.Mapper.ChangedByFields). Events without a field list are
// never skipped by it.
func FieldsUnchanged(fields ...string) Predicate {
	set := make(map[string]bool, len(fields))
	for _, f := range fields {
		set[f] = true
	}
	return func(ev Event) bool {
		if len(ev.Fields) == 0 {
			return false
		}
		for _, f := range ev.Fields {
			if set[f] {
				return false
			}
		}
		return true
	}
}

// And is true when every predicate is (true for none).
func And(ps ...Predicate) Predicate {
	return func(ev Event) bool {
		for _, p := range ps {
			if !p(ev) {
				return false
			}
		}
		return true
	}
}

// Or is true when any predicate is (false for none).
func Or(ps ...Predicate) Predicate {
	return func(ev Event) bool {
		for _, p := range ps {
			if p(ev) {
				return true
			}
		}
		return false
	}
}

// Not negates p.
func Not(p Predicate) Predicate { return func(ev Event) bool { return !p(ev) } }
