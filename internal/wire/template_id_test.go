package wire

import (
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

// A periodic schedule's envelope whose firings' ids would be no job ids
// is refused on both sides of the wire; the longest one allowed gives
// firings with valid ids, by tick and by stream sequence alike.
func TestTemplateIDLeavesRoomForTheFiringsIDs(t *testing.T) {
	longest := strings.Repeat("p", MaxTemplateID)
	for _, firing := range []string{longest + "-t" + strconv.FormatInt(1<<40, 10), longest + "-" + strconv.FormatUint(^uint64(0), 10)} {
		if err := ValidID(firing); err != nil {
			t.Fatalf("firing id of the longest schedule id: %v", err)
		}
	}
	env := func(id string) *Envelope {
		return &Envelope{ID: id, Name: "n", Args: []byte{0x80}, Template: true}
	}
	if _, err := EncodeEnvelope(env(longest)); err != nil {
		t.Fatalf("a schedule id of %d bytes: %v", MaxTemplateID, err)
	}
	tooLong := env(longest + "p")
	if _, err := EncodeEnvelope(tooLong); !errors.Is(err, ErrInvalid) {
		t.Fatalf("EncodeEnvelope of a schedule id of %d bytes: %v, want ErrInvalid", MaxTemplateID+1, err)
	}
	// As another language's producer might write it: the worker takes it
	// for malformed (a dead letter with its reason), not for a schedule
	// whose every firing fails.
	data, err := msgpack.Marshal(map[string]any{"id": tooLong.ID, "name": "n", "args": map[string]any{}, "tmpl": true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := DecodeEnvelope(data, 1<<20); !errors.Is(err, ErrInvalid) {
		t.Fatalf("DecodeEnvelope of a schedule id of %d bytes: %v, want ErrInvalid", MaxTemplateID+1, err)
	}
}
