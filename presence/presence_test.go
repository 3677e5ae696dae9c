package presence_test

import (
	"encoding/json"
	"testing"

	"github.com/updraft/updraft/presence"
)

// TestMemberJSON checks the member's wire shape (protocol: presence).
func TestMemberJSON(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		m    presence.Member
		want string
	}{
		{presence.Member{Key: "user-7", Conn: "s_abc", State: json.RawMessage(`{"name":"Sarah"}`), Joined: 1764170000000},
			`{"key":"user-7","conn":"s_abc","state":{"name":"Sarah"},"joined":1764170000000}`},
		{presence.Member{Key: "s_x", Conn: "s_x", Joined: 1}, `{"key":"s_x","conn":"s_x","joined":1}`},
	} {
		b, err := json.Marshal(c.m)
		if err != nil || string(b) != c.want {
			t.Errorf("Marshal(%+v) = %s, %v; want %s", c.m, b, err, c.want)
		}
	}
}
