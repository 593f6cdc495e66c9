// Package units builds connectors from small units, each registered for a
// backend type and version, and found at run time for (backend, version,
// usage, model): the component system of the OCA connector framework, in
// plain Go values.
//
// # Backends and versions
//
// A Registry holds a tree per backend type. Versions inherit from the type
// and from each other:
//
//	reg := units.NewRegistry()
//	magento := reg.Backend("magento")
//	m23 := magento.Version("2.3")
//	m24 := m23.Version("2.4")
//
// A unit registered on a node serves it and every version below it; a
// version registers its own unit for the same usage and model to override it
// for itself and its descendants. Registering twice at the same node is an
// ErrDuplicateUnit at registration time; Replace replaces on purpose. A lookup
// that finds nothing returns a *NoUnitError naming backend, version, usage
// and model. Units registered for AnyModel serve models nobody registered.
//
// # Usages
//
// A Usage[T] names what a unit does and fixes its Go type, so lookups are
// typed: Lookup(reg, "magento", "2.4", units.ImporterUsage, "product")
// returns an *Importer. The framework ships ImporterUsage, BatchImporterUsage,
// ExporterUsage, DeleterUsage, ImportMapperUsage, ExportMapperUsage,
// BinderUsage and AdapterUsage; declare your own with NewUsage.
//
// # Work context
//
// A Work carries one synchronization's backend instance (Backend: id, type,
// version, settings), the model, the logger and tracer, and reaches the
// backend Adapter, the local Adapter and the Binder. WithModel switches model
// for dependencies and line items. Adapter and binder calls run in spans
// named like "adapter.read magento/product" and "binder.bind magento/product".
// A worker builds it from an Env (Registry.Work) and the job's arguments.
//
// # Adapters and bindings
//
// Adapter is the CRUD interface towards one model of a system; the local
// side uses the same interface, so import and export are symmetric. Missing
// records are a *MissingError (ErrMissing); network failures are marked with
// job.Retry. Package units/adaptertest checks an implementation against this
// contract. Binder (implemented by bindings.Binder) links external and local
// ids with a sync date; Locker (bindings.Store) takes record locks.
//
// # Mappers
//
// A Mapper has Direct rules with composable modifiers (Convert, None,
// LocalToExternal, ExternalToLocal, Follow, Modifier, and the ...From forms
// that apply a modifier to any Source), Computed mappings with ChangedBy
// fields and OnlyCreate, Children for line items (mapped by the items'
// model's import or export mapper, following the direction of the run, with
// Skip and Format hooks), Finalize, and values forced with MapRecord.Update;
// MapOptions carry ForCreate, a Fields filter and custom options (a missing
// one reads as nil). Inherit composes mappers. The seed's
// connector/tests/test_mapper.py is the reference: each of its tests has a
// Go counterpart of the same name.
//
// # Synchronizers
//
// Importer, Exporter, Deleter and BatchImporter run the seed's flows; their
// steps are optional function fields (Skip, Dependencies, Validate, After,
// ...). The job arguments ImportRecord, ExportRecord, DeleteRecord and
// ImportBatch are run by Registry.RunImport, RunExport, RunDelete,
// RunBatchImport (or RunJob). "Nothing to do" outcomes are job.NothingToDo
// errors; locks held elsewhere are job.RetryNoCount errors; records that
// depend on each other fail with ErrDependencyCycle.
//
// # Echo suppression
//
// An importer writes local records with WithOrigin(ctx, backendID). A local
// system puts OriginFrom(ctx) into the change events it publishes, and the
// export listener of that backend skips events whose origin is itself, so an
// imported record is not exported straight back.
//
// # Records created while a run goes the other way
//
// An import's new local record can be exported, or an export's new external
// record imported, before the creating run binds it. The creating run holds
// the other direction's record lock while it binds, so the crossing run
// waits; if the crossing run got ahead of that lock, the run whose Bind
// fails deletes the second copy. A created record that cannot be bound is
// deleted again before the job retries (docs/units.md).
//
// Package units/unitstest has in-memory systems, binders and locks, a job
// trap and an inline job runner for connector authors' tests.
package units
