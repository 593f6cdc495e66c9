package units

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/connector-go/connector/job"
	"go.uber.org/zap"
)

// Job arguments of the synchronizers. A worker runs them with the matching
// Registry.Run* function, e.g.
//
//	worker.Register(w, func(ctx context.Context, j *job.Job[units.ImportRecord]) (string, error) {
//		return reg.RunImport(ctx, env, j.Args)
//	})

// ImportRecord imports one external record (Importer.Run).
type ImportRecord struct {
	BackendID  string `msgpack:"backend_id" json:"backend_id"`
	Model      string `msgpack:"model" json:"model"`
	ExternalID string `msgpack:"external_id" json:"external_id"`
	Force      bool   `msgpack:"force,omitempty" json:"force,omitempty"`
}

// JobName implements job.Args.
func (ImportRecord) JobName() string { return "connector.import_record" }

// JobLabels gives the worker's log lines of the job its backend and model.
func (a ImportRecord) JobLabels() (backend, model string) { return a.BackendID, a.Model }

// IdentityKey is the key delayed imports are enqueued with, so that one
// record has at most one pending import. Its parts are joined with ':';
// a ':' or '\' inside a part is escaped with '\', so two records never
// share a key (backend "a:b", model "c" and backend "a", model "b:c" do
// not).
func (a ImportRecord) IdentityKey() string {
	return a.JobName() + ":" + keyPart(a.BackendID) + ":" + keyPart(a.Model) + ":" + keyPart(a.ExternalID)
}

// keyPart escapes the separator of a key's parts, and the escape.
func keyPart(s string) string {
	if !strings.ContainsAny(s, `:\`) {
		return s
	}
	return strings.NewReplacer(`\`, `\\`, `:`, `\:`).Replace(s)
}

// ExportRecord exports one local record (Exporter.Run). Fields lists the
// changed fields (nil: all).
type ExportRecord struct {
	BackendID string   `msgpack:"backend_id" json:"backend_id"`
	Model     string   `msgpack:"model" json:"model"`
	LocalID   string   `msgpack:"local_id" json:"local_id"`
	Fields    []string `msgpack:"fields,omitempty" json:"fields,omitempty"`
}

// JobName implements job.Args.
func (ExportRecord) JobName() string { return "connector.export_record" }

// JobLabels gives the worker's log lines of the job its backend and model.
func (a ExportRecord) JobLabels() (backend, model string) { return a.BackendID, a.Model }

// DeleteRecord deletes one record in the backend (Deleter.Run).
type DeleteRecord struct {
	BackendID  string `msgpack:"backend_id" json:"backend_id"`
	Model      string `msgpack:"model" json:"model"`
	ExternalID string `msgpack:"external_id" json:"external_id"`
}

// JobName implements job.Args.
func (DeleteRecord) JobName() string { return "connector.delete_record" }

// JobLabels gives the worker's log lines of the job its backend and model.
func (a DeleteRecord) JobLabels() (backend, model string) { return a.BackendID, a.Model }

// ImportBatch imports the records of a search (BatchImporter.Run).
type ImportBatch struct {
	BackendID string         `msgpack:"backend_id" json:"backend_id"`
	Model     string         `msgpack:"model" json:"model"`
	Filters   map[string]any `msgpack:"filters,omitempty" json:"filters,omitempty"`
}

// JobName implements job.Args.
func (ImportBatch) JobName() string { return "connector.import_batch" }

// JobLabels gives the worker's log lines of the job its backend and model.
func (a ImportBatch) JobLabels() (backend, model string) { return a.BackendID, a.Model }

// RunImport runs the ImportRecord job: the importer registered for the
// backend's version and the model imports the record.
func (r *Registry) RunImport(ctx context.Context, env Env, a ImportRecord) (string, error) {
	w, err := r.Work(ctx, env, a.BackendID, a.Model)
	if err != nil {
		return "", err
	}
	imp, err := Find(w, ImporterUsage)
	if err != nil {
		return "", err
	}
	return imp.Run(ctx, w, a.ExternalID, a.Force)
}

// RunExport runs the ExportRecord job.
func (r *Registry) RunExport(ctx context.Context, env Env, a ExportRecord) (string, error) {
	w, err := r.Work(ctx, env, a.BackendID, a.Model)
	if err != nil {
		return "", err
	}
	ex, err := Find(w, ExporterUsage)
	if err != nil {
		return "", err
	}
	return ex.Run(ctx, w, a.LocalID, a.Fields)
}

// RunDelete runs the DeleteRecord job.
func (r *Registry) RunDelete(ctx context.Context, env Env, a DeleteRecord) (string, error) {
	w, err := r.Work(ctx, env, a.BackendID, a.Model)
	if err != nil {
		return "", err
	}
	d, err := Find(w, DeleterUsage)
	if err != nil {
		return "", err
	}
	return d.Run(ctx, w, a.ExternalID)
}

// RunBatchImport runs the ImportBatch job.
func (r *Registry) RunBatchImport(ctx context.Context, env Env, a ImportBatch) (string, error) {
	w, err := r.Work(ctx, env, a.BackendID, a.Model)
	if err != nil {
		return "", err
	}
	b, err := Find(w, BatchImporterUsage)
	if err != nil {
		return "", err
	}
	return b.Run(ctx, w, a.Filters)
}

// Dependency is a related record to synchronize before the main one: an
// external id for importers, a local id for exporters. Always synchronizes
// it even when it is already bound.
type Dependency struct {
	Model  string
	ID     string
	Always bool
}

// ErrDependencyCycle: a dependency is a record whose synchronization is
// already running further up the same chain of dependencies (a record that
// depends, directly or not, on itself). Retrying would not help: the record
// lock is held by the chain itself.
var ErrDependencyCycle = errors.New("units: dependency cycle")

type runningKey struct{}

// running is the chain of records being synchronized by the current run and
// its dependencies, outermost first.
type running struct {
	parent *running
	key    string
}

func (r *running) has(key string) bool {
	for ; r != nil; r = r.parent {
		if r.key == key {
			return true
		}
	}
	return false
}

func (r *running) path(last string) string {
	var keys []string
	for ; r != nil; r = r.parent {
		keys = append(keys, r.key)
	}
	slices.Reverse(keys)
	return strings.Join(append(keys, last), " -> ")
}

// enter marks key as running in ctx; it fails with ErrDependencyCycle when
// key is already running further up the chain.
func enter(ctx context.Context, key string) (context.Context, error) {
	r, _ := ctx.Value(runningKey{}).(*running)
	if r.has(key) {
		return ctx, fmt.Errorf("%w: %s", ErrDependencyCycle, r.path(key))
	}
	return context.WithValue(ctx, runningKey{}, &running{parent: r, key: key}), nil
}

// IsNothingToDo reports whether err only says there was nothing to do.
func IsNothingToDo(err error) bool {
	var n *job.NothingToDoError
	return errors.As(err, &n)
}

// Importer imports one record from the backend into the local system: the
// seed's importer. Every step is an optional hook; the zero Importer imports
// with the ImportMapperUsage mapper of the model. Run's flow:
//
//  1. read the external record (missing: nothing to do);
//  2. Skip: a non-empty reason ends the run as nothing to do;
//  3. find the binding; unless forced, if UpdatedAt says the external record
//     is not newer than the binding's sync date: "already up to date";
//  4. take the record lock (held elsewhere: a retry that does not count);
//  5. import the Dependencies not bound yet (or Always); a dependency already
//     being imported up the same chain is an ErrDependencyCycle;
//  6. map (for create when not bound yet), Validate;
//  7. create or write the local record, with WithOrigin(ctx, backend id) so
//     that change listeners do not export it back;
//  8. bind the external and local ids with a new sync date; After. A new
//     local record is bound under its export lock, and a second copy made
//     by an export that crossed the import is deleted (docs/units.md).
//     With UpdatedAt, the sync date is bound only once After has run, so
//     that a retry of a run that failed or died before After ended is not
//     "already up to date": it runs again, After included.
type Importer struct {
	// Fields to read from the backend (nil: all). An update of a record
	// already imported maps these alone (MapOptions.Fields): the mapper's
	// rules from fields not read leave the local values as they are.
	Fields []string
	// UpdatedAt returns the external record's update time (false: unknown,
	// the record is always imported).
	UpdatedAt func(rec Record) (time.Time, bool)
	// Skip returns a reason to skip the record ("" imports it).
	Skip func(ctx context.Context, w *Work, rec Record) string
	// Dependencies lists the external records to import first.
	Dependencies func(ctx context.Context, w *Work, rec Record) ([]Dependency, error)
	// Mapper overrides the ImportMapperUsage unit.
	Mapper *Mapper
	// Options are custom mapping options.
	Options map[string]any
	// Validate checks the mapped values before they are written.
	Validate func(ctx context.Context, w *Work, values Record, create bool) error
	// After runs once the record is written and bound. Make it idempotent:
	// a retry of a run that failed in After, or died before After ended,
	// runs the whole flow again and After with it (until After has run the
	// binding's sync date is the zero time, so the retry is not "already
	// up to date", and an export meanwhile imports the record first).
	After func(ctx context.Context, w *Work, localID string, rec Record) error
}

// Run imports external record externalID. force imports even when the
// record is up to date. The result says what happened; "nothing to do"
// outcomes are job.NothingToDo errors.
func (imp *Importer) Run(ctx context.Context, w *Work, externalID string, force bool) (res string, err error) {
	ctx, span := w.span(ctx, "import", externalID)
	defer func() { endRun(span, res, err) }()
	ad, err := w.Adapter()
	if err != nil {
		return "", err
	}
	// The binding's sync date is when the record was read, not when it is
	// bound: a change the backend takes in between is newer than the sync
	// date, so its own import runs rather than find the record up to date.
	readAt := w.Env.Now()
	rec, err := ad.Read(ctx, externalID, imp.Fields)
	if errors.Is(err, ErrMissing) {
		return "", job.NothingToDo("%s record %s no longer exists in backend %s", w.Model, externalID, w.Backend.ID)
	}
	if err != nil {
		return "", err
	}
	if imp.Skip != nil {
		if reason := imp.Skip(ctx, w, rec); reason != "" {
			return "", job.NothingToDo("%s", reason)
		}
	}
	binder, err := w.Binder()
	if err != nil {
		return "", err
	}
	// The binding is looked up before the lock (to skip up-to-date records
	// cheaply) and again once the lock is held, since a concurrent import of
	// the same record may have bound it meanwhile.
	findBinding := func() (localID string, bound bool, err error) {
		if localID, bound, err = binder.ToInternal(ctx, externalID); err != nil || !bound || force || imp.UpdatedAt == nil {
			return localID, bound, err
		}
		if updated, ok := imp.UpdatedAt(rec); ok {
			synced, found, err := binder.SyncDate(ctx, externalID)
			if err != nil {
				return "", false, err
			}
			if found && !synced.Before(updated) {
				return "", false, job.NothingToDo("already up to date")
			}
		}
		return localID, bound, nil
	}
	if _, _, err := findBinding(); err != nil {
		return "", err
	}
	resource := w.importResource(externalID)
	if ctx, err = enter(ctx, resource); err != nil {
		return "", err
	}
	unlock, err := w.lock(ctx, resource)
	if err != nil {
		return "", err
	}
	defer unlock()
	localID, bound, err := findBinding()
	if err != nil {
		return "", err
	}
	if imp.Dependencies != nil {
		deps, err := imp.Dependencies(ctx, w, rec)
		if err != nil {
			return "", err
		}
		for _, d := range deps {
			if err := ImportDependency(ctx, w, d); err != nil {
				return "", err
			}
		}
	}
	mapper := imp.Mapper
	if mapper == nil {
		if mapper, err = Find(w, ImportMapperUsage); err != nil {
			return "", err
		}
	}
	local, err := w.Local()
	if err != nil {
		return "", err
	}
	mapValues := func(create bool) (Record, error) {
		opts := MapOptions{ForCreate: create, Custom: imp.Options}
		if !create {
			// A field not read maps to nil: an update of the local record
			// would clear it there.
			opts.Fields = imp.Fields
		}
		values, err := mapper.MapRecord(w, rec).Values(ctx, opts)
		if err != nil {
			return nil, err
		}
		if imp.Validate != nil {
			if err := imp.Validate(ctx, w, values, create); err != nil {
				return nil, err
			}
		}
		return values, nil
	}
	values, err := mapValues(!bound)
	if err != nil {
		return "", err
	}
	octx := WithOrigin(ctx, w.Backend.ID)
	verb := "updated"
	if bound {
		err = local.Write(octx, localID, values)
		if errors.Is(err, ErrMissing) {
			// The local record was deleted: drop the stale binding and
			// create the record again.
			w.Logger.Info("bound local record missing: creating it again", zap.String("external_id", externalID), zap.String("local_id", localID))
			if err = binder.Unbind(ctx, externalID); err != nil {
				return "", err
			}
			if values, err = mapValues(true); err != nil {
				return "", err
			}
			bound = false
		} else if err != nil {
			return "", err
		}
	}
	// With After and UpdatedAt, the binding is first written with the zero
	// sync date ("never synced") and gets readAt only once After has run:
	// a retry of a run whose After failed, or whose worker died before
	// After ended, then finds the record not up to date and runs the whole
	// flow again, After included, instead of skipping it (After must be
	// idempotent, as in the seed, where a retry re-runs the job).
	pending := imp.After != nil && imp.UpdatedAt != nil
	bindAt := readAt
	if pending {
		bindAt = time.Time{}
	}
	if bound {
		// The local record is written: its binding is written too even if
		// the job is cancelled meanwhile, for a bounded time (else the
		// change imported reads as not synced).
		bctx, cancel := afterWrite(ctx)
		defer cancel()
		err = binder.Bind(bctx, externalID, localID, bindAt)
	} else {
		verb = "created"
		if localID, err = local.Create(octx, values); err == nil {
			err = w.bindCreated(ctx, binder, externalID, localID, true, bindAt)
		}
	}
	if err != nil {
		return "", err
	}
	if imp.After != nil {
		if err := imp.After(ctx, w, localID, rec); err != nil {
			return "", err
		}
	}
	if pending {
		bctx, cancel := afterWrite(ctx)
		defer cancel()
		if err := binder.Bind(bctx, externalID, localID, readAt); err != nil {
			return "", err
		}
	}
	w.Logger.Debug("imported", zap.String("external_id", externalID), zap.String("local_id", localID), zap.String("op", verb))
	return fmt.Sprintf("%s %s imported from %s: local record %s %s", w.Model, externalID, w.Backend.ID, localID, verb), nil
}

// ImportDependency imports d (an external id) with the importer of its model
// unless it is bound already and not d.Always. Nothing to do is no error.
func ImportDependency(ctx context.Context, w *Work, d Dependency) error {
	dw := w.WithModel(d.Model)
	if !d.Always {
		b, err := dw.Binder()
		if err != nil {
			return err
		}
		if _, found, err := b.ToInternal(ctx, d.ID); err != nil || found {
			return err
		}
	}
	imp, err := Find(dw, ImporterUsage)
	if err != nil {
		return err
	}
	if _, err := imp.Run(ctx, dw, d.ID, false); err != nil && !IsNothingToDo(err) {
		return fmt.Errorf("import dependency %s %s: %w", d.Model, d.ID, err)
	}
	return nil
}

// Exporter exports one local record to the backend: the seed's exporter.
// Run's flow:
//
//  1. find the external id; if bound and UpdatedAt is set, read the external
//     record: if it changed after the last sync, import it (a forced
//     ImportRecord job, or inline without Env.Jobs) instead of overwriting it;
//  2. take the record lock; read the local record; Skip;
//  3. export the Dependencies not bound yet (or Always);
//  4. map only the changed fields (all fields on create), Validate;
//  5. create or write the external record; bind with a new sync date (the
//     stamp of the write, UpdatedAt of the stored record, when the adapter
//     is a ReturningWriter; else the time of the bind); After.
//     A new external record is bound under its import lock, and a second
//     copy made by an import that crossed the export is deleted
//     (docs/units.md).
type Exporter struct {
	UpdatedAt    func(external Record) (time.Time, bool)
	Skip         func(ctx context.Context, w *Work, rec Record) string
	Dependencies func(ctx context.Context, w *Work, rec Record) ([]Dependency, error)
	// Mapper overrides the ExportMapperUsage unit.
	Mapper   *Mapper
	Options  map[string]any
	Validate func(ctx context.Context, w *Work, values Record, create bool) error
	After    func(ctx context.Context, w *Work, externalID string, rec Record) error
	// JobOptions are added to the import job enqueued instead of an export
	// when the backend's record changed since the last sync (channel,
	// priority, ...): give it the connector's channel, as its other jobs.
	JobOptions []job.Option
}

// Run exports local record localID; fields are the changed fields (nil: all).
func (ex *Exporter) Run(ctx context.Context, w *Work, localID string, fields []string) (res string, err error) {
	ctx, span := w.span(ctx, "export", localID)
	defer func() { endRun(span, res, err) }()
	binder, err := w.Binder()
	if err != nil {
		return "", err
	}
	externalID, bound, err := binder.ToExternal(ctx, localID)
	if err != nil {
		return "", err
	}
	ad, err := w.Adapter()
	if err != nil {
		return "", err
	}
	var before time.Time // the external record's stamp, read before the write
	if bound && ex.UpdatedAt != nil {
		ext, err := ad.Read(ctx, externalID, nil)
		switch {
		case errors.Is(err, ErrMissing):
			// Gone in the backend: drop the binding and create it again.
			if err := binder.Unbind(ctx, externalID); err != nil {
				return "", err
			}
			bound, externalID = false, ""
		case err != nil:
			return "", err
		default:
			if updated, ok := ex.UpdatedAt(ext); ok {
				before = updated
				synced, found, err := binder.SyncDate(ctx, externalID)
				if err != nil {
					return "", err
				}
				if found && updated.After(synced) {
					return ex.importFirst(ctx, w, externalID)
				}
			}
		}
	}
	resource := w.exportResource(localID)
	if ctx, err = enter(ctx, resource); err != nil {
		return "", err
	}
	unlock, err := w.lock(ctx, resource)
	if err != nil {
		return "", err
	}
	defer unlock()
	if !bound {
		// A concurrent export may have created the record meanwhile.
		if externalID, bound, err = binder.ToExternal(ctx, localID); err != nil {
			return "", err
		}
	}
	local, err := w.Local()
	if err != nil {
		return "", err
	}
	rec, err := local.Read(ctx, localID, nil)
	if errors.Is(err, ErrMissing) {
		return "", job.NothingToDo("local %s record %s no longer exists", w.Model, localID)
	}
	if err != nil {
		return "", err
	}
	if ex.Skip != nil {
		if reason := ex.Skip(ctx, w, rec); reason != "" {
			return "", job.NothingToDo("%s", reason)
		}
	}
	if ex.Dependencies != nil {
		deps, err := ex.Dependencies(ctx, w, rec)
		if err != nil {
			return "", err
		}
		for _, d := range deps {
			if err := ExportDependency(ctx, w, d); err != nil {
				return "", err
			}
		}
	}
	mapper := ex.Mapper
	if mapper == nil {
		if mapper, err = Find(w, ExportMapperUsage); err != nil {
			return "", err
		}
	}
	mapValues := func(create bool) (Record, error) {
		opts := MapOptions{ForCreate: create, Custom: ex.Options}
		if !create {
			opts.Fields = fields
		}
		mr := mapper.MapRecord(w, rec)
		mr.Usage = ExportMapperUsage
		values, err := mr.Values(ctx, opts)
		if err != nil {
			return nil, err
		}
		if !create && len(values) == 0 {
			return nil, job.NothingToDo("nothing to export")
		}
		if ex.Validate != nil {
			if err := ex.Validate(ctx, w, values, create); err != nil {
				return nil, err
			}
		}
		return values, nil
	}
	values, err := mapValues(!bound)
	if err != nil {
		return "", err
	}
	// The sync date: the stamp of this write when the adapter returns the
	// stored record (ReturningWriter), else the time of the bind. A stamp
	// not after the one read before the write is not this write's (an
	// answer without the stamp the system sets): the time of the bind then.
	var stamp time.Time
	write, create := ad.Write, ad.Create
	if rw, ok := ad.(ReturningWriter); ok && ex.UpdatedAt != nil {
		keep := func(stored Record) {
			if t, ok := ex.UpdatedAt(stored); ok && t.After(before) {
				stamp = t
			}
		}
		write = func(ctx context.Context, id string, rec Record) error {
			stored, err := rw.WriteReturning(ctx, id, rec)
			if err == nil {
				keep(stored)
			}
			return err
		}
		create = func(ctx context.Context, rec Record) (string, error) {
			id, stored, err := rw.CreateReturning(ctx, rec)
			if err == nil {
				keep(stored)
			}
			return id, err
		}
	}
	syncDate := func() time.Time {
		if !stamp.IsZero() {
			return stamp
		}
		return w.Env.Now()
	}
	verb := "updated"
	if bound {
		err = write(ctx, externalID, values)
		if errors.Is(err, ErrMissing) {
			// Deleted in the backend: create it again with all fields.
			w.Logger.Info("bound external record missing: creating it again", zap.String("external_id", externalID), zap.String("local_id", localID))
			if err = binder.Unbind(ctx, externalID); err != nil {
				return "", err
			}
			if values, err = mapValues(true); err != nil {
				return "", err
			}
			bound = false
		} else if err != nil {
			return "", err
		}
	}
	if bound {
		// The record is written: its binding is written too even if the
		// job is cancelled meanwhile, for a bounded time (else the retry
		// finds the export's own write newer than the sync date, and
		// imports it first).
		bctx, cancel := afterWrite(ctx)
		defer cancel()
		synced := syncDate()
		if !stamp.IsZero() {
			// An import that ran meanwhile (it takes another lock) may have
			// bound a later sync date, after a change it imported: the
			// stamp, older, must not take it back (the change would read
			// as not synced, and the next export would import it first
			// over a local change).
			if cur, found, err := binder.SyncDate(bctx, externalID); err == nil && found && cur.After(synced) {
				synced = cur
			}
		}
		err = binder.Bind(bctx, externalID, localID, synced)
	} else {
		verb = "created"
		if externalID, err = create(ctx, values); err == nil {
			err = w.bindCreated(ctx, binder, externalID, localID, false, syncDate())
		}
	}
	if err != nil {
		return "", err
	}
	if ex.After != nil {
		if err := ex.After(ctx, w, externalID, rec); err != nil {
			return "", err
		}
	}
	return fmt.Sprintf("%s %s exported to %s: record %s %s", w.Model, localID, w.Backend.ID, externalID, verb), nil
}

func (ex *Exporter) importFirst(ctx context.Context, w *Work, externalID string) (string, error) {
	a := ImportRecord{BackendID: w.Backend.ID, Model: w.Model, ExternalID: externalID, Force: true}
	if w.Env.Jobs != nil {
		opts := append([]job.Option{job.WithIdentityKey(a.IdentityKey())}, ex.JobOptions...)
		id, err := w.Env.Jobs.Enqueue(ctx, a, opts...)
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("%s %s changed in %s since the last sync: import enqueued (job %s) instead of export", w.Model, externalID, w.Backend.ID, id), nil
	}
	imp, err := Find(w, ImporterUsage)
	if err != nil {
		return "", err
	}
	if _, err := imp.Run(ctx, w, externalID, true); err != nil && !IsNothingToDo(err) {
		return "", err
	}
	return fmt.Sprintf("%s %s changed in %s since the last sync: imported instead of exported", w.Model, externalID, w.Backend.ID), nil
}

// ExportDependency exports d (a local id) with the exporter of its model
// unless it is bound already and not d.Always.
func ExportDependency(ctx context.Context, w *Work, d Dependency) error {
	dw := w.WithModel(d.Model)
	if !d.Always {
		b, err := dw.Binder()
		if err != nil {
			return err
		}
		if _, found, err := b.ToExternal(ctx, d.ID); err != nil || found {
			return err
		}
	}
	ex, err := Find(dw, ExporterUsage)
	if err != nil {
		return err
	}
	if _, err := ex.Run(ctx, dw, d.ID, nil); err != nil && !IsNothingToDo(err) {
		return fmt.Errorf("export dependency %s %s: %w", d.Model, d.ID, err)
	}
	return nil
}

// Deleter deletes one record in the backend and removes its binding.
type Deleter struct {
	// After runs once the record is gone from the backend and unbound,
	// also when it was gone already: a retry of a run that failed in
	// After, or died before After ended, finds the record deleted and runs
	// After again. Make it idempotent.
	After func(ctx context.Context, w *Work, externalID string) error
}

// Run deletes external record externalID. A record already gone is nothing
// to do (its binding is still removed, and After runs).
func (d *Deleter) Run(ctx context.Context, w *Work, externalID string) (res string, err error) {
	ctx, span := w.span(ctx, "delete", externalID)
	defer func() { endRun(span, res, err) }()
	ad, err := w.Adapter()
	if err != nil {
		return "", err
	}
	binder, err := w.Binder()
	if err != nil {
		return "", err
	}
	unlock, err := w.lock(ctx, w.deleteResource(externalID))
	if err != nil {
		return "", err
	}
	defer unlock()
	// An import of the record past its binding lookup would bind it again
	// after the unbind: the delete waits for it.
	unlockImport, err := w.lock(ctx, w.importResource(externalID))
	if err != nil {
		return "", err
	}
	defer unlockImport()
	derr := ad.Delete(ctx, externalID)
	if derr != nil && !errors.Is(derr, ErrMissing) {
		return "", derr
	}
	if err := binder.Unbind(ctx, externalID); err != nil {
		return "", err
	}
	// After runs also for a record found gone: a retry of a run whose
	// After failed, or whose worker died before After ended, finds it so.
	if d.After != nil {
		if err := d.After(ctx, w, externalID); err != nil {
			return "", err
		}
	}
	if derr != nil {
		return "", job.NothingToDo("%s %s already deleted in %s", w.Model, externalID, w.Backend.ID)
	}
	return fmt.Sprintf("%s %s deleted in %s", w.Model, externalID, w.Backend.ID), nil
}

// BatchImporter searches the backend and imports every record found, page by
// page: directly (each with the model's importer, in this run) or, when
// Delayed, as one ImportRecord job per record enqueued with its identity key
// so that a record has at most one pending import. A backend whose Search
// ignores Offset and Limit (it answers the same page again) has its records
// imported once: a page with nothing new ends the search. A page shorter
// than PageSize does not: many APIs cap their pages below the limit asked
// (the next offset is the one after the ids received), so the search ends
// on an empty page.
type BatchImporter struct {
	Delayed bool
	// PageSize is the search page size (0: 100).
	PageSize int
	// JobOptions are added to each delayed job (channel, priority, ...).
	JobOptions []job.Option
}

// Run imports the records matching filters.
func (b *BatchImporter) Run(ctx context.Context, w *Work, filters map[string]any) (res string, err error) {
	ctx, span := w.span(ctx, "batch_import", "")
	defer func() { endRun(span, res, err) }()
	ad, err := w.Adapter()
	if err != nil {
		return "", err
	}
	size := b.PageSize
	if size <= 0 {
		size = 100
	}
	var imp *Importer
	if !b.Delayed {
		if imp, err = Find(w, ImporterUsage); err != nil {
			return "", err
		}
	} else if w.Env.Jobs == nil {
		return "", fmt.Errorf("%w: a delayed batch import needs Env.Jobs", ErrEnv)
	}
	var n, skipped int
	// An id of the page before (a backend that ignores Offset or Limit, as
	// adaptertest.Harness.NoPaging allows, answers the same page again) is
	// not imported twice, and a page with nothing new ends the search: it
	// would repeat for ever. Only the page before is kept: a run over
	// millions of records holds one page of ids, not all of them.
	var (
		prev map[string]bool
		ids  []string
	)
	for offset := 0; ; offset += len(ids) {
		if ids, err = ad.Search(ctx, Query{Filters: filters, Offset: offset, Limit: size}); err != nil {
			return "", err
		}
		page := make(map[string]bool, len(ids))
		fresh := 0
		for _, id := range ids {
			if prev[id] || page[id] {
				continue
			}
			page[id] = true
			fresh++
			if b.Delayed {
				a := ImportRecord{BackendID: w.Backend.ID, Model: w.Model, ExternalID: id}
				opts := append([]job.Option{job.WithIdentityKey(a.IdentityKey())}, b.JobOptions...)
				if _, err := w.Env.Jobs.Enqueue(ctx, a, opts...); err != nil {
					return "", err
				}
			} else if _, err := imp.Run(ctx, w, id, false); err != nil {
				if !IsNothingToDo(err) {
					return "", fmt.Errorf("import %s %s: %w", w.Model, id, err)
				}
				skipped++
			}
			n++
		}
		if fresh == 0 { // an empty page, or the one before again
			break
		}
		prev = page
	}
	if b.Delayed {
		return fmt.Sprintf("%d %s import jobs enqueued for %s", n, w.Model, w.Backend.ID), nil
	}
	return fmt.Sprintf("%d %s records imported from %s (%d had nothing to do)", n-skipped, w.Model, w.Backend.ID, skipped), nil
}

// ErrUnknownArgs: RunJob got job arguments that are not one of the
// synchronizers' (ImportRecord, ExportRecord, DeleteRecord, ImportBatch).
var ErrUnknownArgs = errors.New("units: not a synchronizer job")

// RunJob runs the synchronizer job args (any of ImportRecord, ExportRecord,
// DeleteRecord, ImportBatch, by value or pointer).
func (r *Registry) RunJob(ctx context.Context, env Env, args job.Args) (string, error) {
	switch a := args.(type) {
	case ImportRecord:
		return r.RunImport(ctx, env, a)
	case *ImportRecord:
		if a != nil {
			return r.RunImport(ctx, env, *a)
		}
	case ExportRecord:
		return r.RunExport(ctx, env, a)
	case *ExportRecord:
		if a != nil {
			return r.RunExport(ctx, env, *a)
		}
	case DeleteRecord:
		return r.RunDelete(ctx, env, a)
	case *DeleteRecord:
		if a != nil {
			return r.RunDelete(ctx, env, *a)
		}
	case ImportBatch:
		return r.RunBatchImport(ctx, env, a)
	case *ImportBatch:
		if a != nil {
			return r.RunBatchImport(ctx, env, *a)
		}
	}
	// Another type, nil, or a nil pointer of one of these: its JobName
	// would panic on a nil.
	return "", fmt.Errorf("%w: %T", ErrUnknownArgs, args)
}
