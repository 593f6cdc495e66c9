package units

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/connector-go/connector/internal/telemetry"
	"github.com/connector-go/connector/job"
)

// The record locks of the synchronizers, one per direction and record:
// "import/<backend>/<model>/<id>". A '/' or '\' inside a part is escaped
// with '\' (names without them are unchanged), so two records never share
// a lock: external "y/z" of model "x" and external "z" of model "x/y"
// would, and an import of one depending on the other would find its own
// lock (a false ErrDependencyCycle).
func (w *Work) importResource(externalID string) string {
	return w.resource("import", externalID)
}

func (w *Work) exportResource(localID string) string {
	return w.resource("export", localID)
}

func (w *Work) deleteResource(externalID string) string {
	return w.resource("delete", externalID)
}

func (w *Work) resource(op, id string) string {
	return op + "/" + resourcePart(w.Backend.ID) + "/" + resourcePart(w.Model) + "/" + resourcePart(id)
}

// resourcePart escapes the separator of a resource name's parts, and the
// escape.
func resourcePart(s string) string {
	if !strings.ContainsAny(s, `/\`) {
		return s
	}
	return strings.NewReplacer(`\`, `\\`, `/`, `\/`).Replace(s)
}

// copyRaceDelay is how long a run that removed a second copy waits before it
// runs again (as long as a lock held elsewhere makes it wait).
const copyRaceDelay = time.Second

// bindTimeout bounds binding a created record, or undoing it, once the
// job's context is cancelled.
const bindTimeout = 10 * time.Second

// afterWrite is the context of what follows a record's write (its binding):
// it goes on when ctx is cancelled (a worker's shutdown), for bindTimeout
// at most, so that a written record is not left unbound.
func afterWrite(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), bindTimeout)
}

// bindCreated binds externalID and localID after this run created one of
// them: the local record for an import (importing), the external one for an
// export.
//
// Creating a record and binding it are two steps, and a run going the other
// way may start between them: an export of the local record an import has
// just created (a local change that does not carry the import's origin, such
// as an automation reacting to the create), or an import of the external
// record an export has just created. That run sees the new record unbound
// and would make a second copy of it in the first system. Two measures keep
// one copy:
//
//  1. While it binds, the creating run holds the other direction's record
//     lock on the new record, so that such a run waits (a retry that does
//     not count) and then finds the binding.
//  2. A run that took that lock first (it can, in the moment between the
//     create and the lock) makes its copy, and one of the two Binds fails.
//     The run whose Bind fails removes the second copy, whichever run made
//     it: its own record when the record it copied is bound already (it then
//     runs again, as a retry that does not count, to update the bound
//     record), or the other run's copy of the record it has just created
//     (then it binds its own pair).
//
// A record that cannot be bound at all (Redis unavailable) is deleted again,
// so that the job's retry creates it once, not twice. synced is the
// binding's sync date.
func (w *Work) bindCreated(ctx context.Context, binder Binder, externalID, localID string, importing bool, synced time.Time) error {
	// The record exists now: binding it (or undoing it) goes on even if the
	// job is cancelled meanwhile (a worker's shutdown), for a bounded time.
	ctx, cancel := afterWrite(ctx)
	defer cancel()
	peer := w.importResource(externalID)
	if importing {
		peer = w.exportResource(localID)
	}
	if unlock, err := w.lock(ctx, peer); err == nil {
		defer unlock()
	} else {
		// Held by a run going the other way (or Redis failed, and Bind
		// will say so): bind anyway and settle a conflict below.
		w.Logger.Debug("bind a created record without the other direction's lock", zap.String("resource", peer), telemetry.ErrField(err))
	}
	bindErr := binder.Bind(ctx, externalID, localID, synced)
	if bindErr == nil {
		return nil
	}
	boundLocal, extBound, err1 := binder.ToInternal(ctx, externalID)
	boundExt, locBound, err2 := binder.ToExternal(ctx, localID)
	if err1 == nil && err2 == nil && extBound && boundLocal == localID && locBound && boundExt == externalID {
		return nil // bound after all (the answer was lost)
	}
	extTaken := err1 == nil && extBound && boundLocal != localID
	locTaken := err2 == nil && locBound && boundExt != externalID
	if extTaken && locTaken {
		// Not a race between two runs of this pair: left as it is.
		return bindErr
	}
	local, err := w.Local()
	if err != nil {
		return err
	}
	ad, err := w.Adapter()
	if err != nil {
		return err
	}
	// The local system's deletes carry the origin, like the import's
	// writes, so that the export listener does not echo them.
	octx := WithOrigin(ctx, w.Backend.ID)
	deleteOwn := func() error {
		if importing {
			return local.Delete(octx, localID)
		}
		return ad.Delete(ctx, externalID)
	}
	var (
		own    bool   // the second copy is the record this run created
		why    string // how the second copy came about
		del    func() error
		unbind string // the external id of the copy's binding
	)
	switch {
	case !extTaken && !locTaken:
		// Bind failed (Redis unavailable, say): a later run would create
		// the record again. The record is deleted instead, so that the
		// run's retry creates it once.
		created := "external " + externalID
		if importing {
			created = "local " + localID
		}
		if err := deleteOwn(); err != nil && !errors.Is(err, ErrMissing) {
			return fmt.Errorf("%s: %s was created and could not be bound, nor deleted (a retry may make a second copy): %w (delete: %w)", w.Model, created, bindErr, err)
		}
		w.Logger.Warn("created record deleted: it could not be bound", zap.String("model", w.Model), zap.String("record", created), telemetry.ErrField(bindErr))
		return fmt.Errorf("%s: %s was created and could not be bound, so it is deleted and the run's retry creates it again: %w", w.Model, created, bindErr)
	case importing && extTaken:
		// An export created externalID from boundLocal: the local record
		// this import created is a second copy of boundLocal.
		own, del = true, deleteOwn
		why = fmt.Sprintf("external %s was bound to local %s by an export while this import created local %s", externalID, boundLocal, localID)
	case !importing && locTaken:
		// An import created localID from boundExt: the external record
		// this export created is a second copy of boundExt.
		own, del = true, deleteOwn
		why = fmt.Sprintf("local %s was bound to external %s by an import while this export created external %s", localID, boundExt, externalID)
	case importing:
		// An export copied the local record this import created to the
		// backend as boundExt.
		unbind = boundExt
		why = fmt.Sprintf("an export copied local %s, which this import created, to external %s", localID, boundExt)
		del = func() error { return ad.Delete(ctx, boundExt) }
	default:
		// An import copied the external record this export created to the
		// local system as boundLocal.
		unbind = externalID
		why = fmt.Sprintf("an import copied external %s, which this export created, to local %s", externalID, boundLocal)
		del = func() error { return local.Delete(octx, boundLocal) }
	}
	if err := del(); err != nil && !errors.Is(err, ErrMissing) {
		return fmt.Errorf("%s: %s; deleting that second copy failed: %w (bind: %w)", w.Model, why, err, bindErr)
	}
	w.Logger.Warn("second copy of a record deleted", zap.String("model", w.Model), zap.String("why", why))
	if own {
		return job.RetryNoCount(fmt.Errorf("%s: %s: that second copy is deleted and the run goes again to update the bound record: %w", w.Model, why, bindErr), copyRaceDelay)
	}
	if err := binder.Unbind(ctx, unbind); err != nil {
		return err
	}
	return binder.Bind(ctx, externalID, localID, synced)
}
