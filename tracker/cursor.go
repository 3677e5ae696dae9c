package tracker

import (
	"fmt"
	"strconv"
	"strings"
)

// cursor is where the tracker stands in the change log, stored with every
// batch it publishes (see Coordinator.PublishFenced).
//
// prev is the snapshot of the last window read completely: every change
// whose transaction is visible in it has been published. While a window
// too large for one batch is paged through, cur is that window's snapshot
// and after the id of the last change published from it; both are empty
// between windows.
type cursor struct {
	prev  string
	cur   string
	after int64
}

// cursorVersion prefixes the encoding, so that a later format can be told
// apart.
const cursorVersion = "v1"

// String encodes c: "v1;prev;cur;after" (cur and after empty between
// windows). Snapshots print as "xmin:xmax:xip,...": no ';'.
func (c cursor) String() string {
	after := ""
	if c.cur != "" {
		after = strconv.FormatInt(c.after, 10)
	}
	return cursorVersion + ";" + c.prev + ";" + c.cur + ";" + after
}

func parseCursor(s string) (cursor, error) {
	parts := strings.Split(s, ";")
	if len(parts) != 4 || parts[0] != cursorVersion || parts[1] == "" {
		return cursor{}, fmt.Errorf("tracker: unreadable cursor %q", s)
	}
	c := cursor{prev: parts[1], cur: parts[2]}
	if c.cur != "" {
		n, err := strconv.ParseInt(parts[3], 10, 64)
		if err != nil || n < 0 {
			return cursor{}, fmt.Errorf("tracker: unreadable cursor %q", s)
		}
		c.after = n
	}
	return c, nil
}
