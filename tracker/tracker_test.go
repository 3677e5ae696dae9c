package tracker

import (
	"testing"

	"github.com/updraft/updraft/broker"
)

// Every operation, and the column types whose rendering must survive
// untouched: composite and non-integer keys, NULLs, JSON, arrays,
// timestamps, numeric precision.
func TestOperationsAndTypes(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.exec(`CREATE TABLE items (
		region text, n int, price numeric(40,20), tags text[], meta jsonb, at timestamptz, note text,
		PRIMARY KEY (region, n))`,
		`CREATE SCHEMA billing`,
		`CREATE TABLE billing.invoices (id uuid PRIMARY KEY, total numeric)`)
	h.subscribe("items", "billing.invoices")
	h.start(Config{Tables: []string{"items", "billing.invoices"}})

	h.exec(`INSERT INTO items VALUES ('eu', 1, 12345678901234567890.12345678901234567890, '{a,"b c"}', '{"k":[1,{"x":null}]}', '2026-11-27 10:00:00.123456+00', NULL)`,
		`UPDATE items SET note = 'hi', price = 0.1 WHERE region = 'eu' AND n = 1`,
		`DELETE FROM items WHERE region = 'eu'`,
		`INSERT INTO billing.invoices VALUES ('6f1c2a3e-0000-4000-8000-000000000001', 1e-30)`)

	got := h.wait("items", 3)
	if len(got) != 3 || got[0].Event != "INSERT" || got[1].Event != "UPDATE" || got[2].Event != "DELETE" {
		t.Fatalf("events %v, want INSERT UPDATE DELETE", events(got))
	}
	ins, upd, del := got[0], got[1], got[2]
	for col, want := range map[string]string{
		"region": `"eu"`, "n": `1`,
		"price": `12345678901234567890.12345678901234567890`,
		"tags":  `["a", "b c"]`, "meta": `{"k": [1, {"x": null}]}`,
		"at": `"2026-11-27T10:00:00.123456+00:00"`, "note": `null`,
	} {
		if got := field(t, ins.Data, col); got != want {
			t.Errorf("INSERT %s = %s, want %s", col, got, want)
		}
	}
	if ins.Old != nil {
		t.Errorf("INSERT carries old %s", ins.Old)
	}
	if field(t, upd.Data, "note") != `"hi"` || field(t, upd.Old, "note") != `null` ||
		field(t, upd.Data, "price") != `0.10000000000000000000` {
		t.Errorf("UPDATE data %s old %s", upd.Data, upd.Old)
	}
	if field(t, del.Data, "note") != `"hi"` || field(t, del.Old, "n") != `1` {
		t.Errorf("DELETE data %s old %s: want the row as it was in both", del.Data, del.Old)
	}
	if ins.TS == 0 || ins.Epoch == "" || ins.Seq != 1 || del.Seq != 3 {
		t.Errorf("positions %+v %+v", ins.Position, del.Position)
	}
	inv := h.wait("billing.invoices", 1)[0]
	if field(t, inv.Data, "id") != `"6f1c2a3e-0000-4000-8000-000000000001"` || field(t, inv.Data, "total") != `0.000000000000000000000000000001` {
		t.Errorf("billing.invoices event %s", inv.Data)
	}
}

// events lists the event names of ms.
func events(ms []broker.Message) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.Event
	}
	return out
}
