package job

import (
	"crypto/sha1"
	"encoding/hex"
)

// IdentityExact is the seed's identity_exact: a hash of the job name and its
// encoded arguments, so that two enqueues of the same function with the same
// arguments share one pending job.
func IdentityExact(name string, args []byte) string {
	h := sha1.New()
	h.Write([]byte(name))
	h.Write([]byte{0})
	h.Write(args)
	return hex.EncodeToString(h.Sum(nil))
}
