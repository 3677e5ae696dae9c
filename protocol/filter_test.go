package protocol

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
)

// testRow is the row most match tests run against.
const testRow = `{"id":7,"status":"paid","amount":12.50,"note":null,"flag":true,"off":false,
	"big":12345678901234567890.123456789,"neg":-3,"zero":0,"tiny":1.5e-300,
	"name":"O\"Brien, \u00e9","tags":["a", "b"],"meta":{"k": 1},"code":"007",
	"eq":"eq","in":2,"a.b":"dotted","num_str":"10"}`

func TestFilterMatch(t *testing.T) {
	row, err := ParseRow(json.RawMessage(testRow))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		filter string
		want   bool
	}{
		// eq and neq, numbers and strings
		{"id=eq.7", true},
		{"id=eq.7.0", true},
		{"id=eq.07", true},
		{"id=eq.+7", true},
		{"id=eq.7e0", true},
		{"id=eq.0.7e1", true},
		{"id=eq.70e-1", true},
		{"id=eq.8", false},
		{"id=neq.8", true},
		{"id=neq.7", false},
		{"status=eq.paid", true},
		{"status=eq.PAID", false},
		{"status=neq.new", true},
		{"status=eq.", false},
		{"amount=eq.12.5", true},
		{"amount=eq.12.500", true},
		{"amount=eq.12.51", false},
		// numeric column, non-numeric value: compared as strings
		{"id=eq.seven", false},
		{"id=neq.seven", true},
		// string column holding digits: compared as strings, not numbers
		{"code=eq.007", true},
		{"code=eq.7", false},
		{"num_str=gt.9", false}, // "10" < "9" as strings
		// ordering
		{"id=gt.6", true},
		{"id=gt.7", false},
		{"id=gte.7", true},
		{"id=lt.7", false},
		{"id=lte.7", true},
		{"id=lt.10", true}, // numeric, not "7" > "10"
		{"neg=lt.0", true},
		{"neg=lt.-2.5", true},
		{"neg=gt.-3.1", true},
		{"zero=eq.-0", true},
		{"zero=eq.0e99", true},
		{"zero=lt.0.0000001", true},
		{"tiny=gt.0", true},
		{"tiny=lt.1e-299", true},
		{"tiny=eq.15e-301", true},
		{"status=gt.new", true},
		{"status=lt.new", false},
		{"status=gte.paid", true},
		// big numerics: exact beyond float64
		{"big=eq.12345678901234567890.123456789", true},
		{"big=eq.12345678901234567890.1234567890000", true},
		{"big=eq.12345678901234567890.123456788", false},
		{"big=gt.12345678901234567890.123456788", true},
		{"big=lt.12345678901234567890.123456790", true},
		{"big=gt.12345678901234567890.12345678900001", false},
		{"big=lt.1e20", true},
		{"big=gt.1e19", true},
		{"big=lt.1e99999999999999999999", true},
		{"big=gt.-1e99999999999999999999", true},
		{"tiny=gt.1e-99999999999999999999", true},
		// in
		{"id=in.(1,7,9)", true},
		{"id=in.(1,9)", false},
		{"id=in.(7.0)", true},
		{"status=in.(new,paid)", true},
		{"status=in.(new,late)", false},
		{`name=in.("O\"Brien, é",x)`, true},
		{`name=in.(x,"O\"Brien, é")`, true},
		{`status=in.("paid")`, true},
		{`status=in.(p"aid)`, false},
		{`status=in.("pa&id",paid)`, true},
		// is
		{"note=is.null", true},
		{"id=is.null", false},
		{"flag=is.true", true},
		{"flag=is.false", false},
		{"off=is.false", true},
		{"status=is.true", false},
		// NULL matches nothing but is.null; a missing column is NULL
		{"note=eq.null", false},
		{"note=neq.x", false},
		{"note=gt.0", false},
		{"note=in.(null,x)", false},
		{"missing=is.null", true},
		{"missing=eq.1", false},
		{"missing=neq.1", false},
		{"missing=in.(1)", false},
		{"missing=is.true", false},
		// booleans, objects and arrays compare as their JSON text
		{"flag=eq.true", true},
		{"off=eq.false", true},
		{`tags=eq.["a","b"]`, true},
		{`meta=eq.{"k":1}`, true},
		{`meta=eq.{"k": 1}`, false},
		// unescaped strings
		{`name=eq.O"Brien, é`, true},
		// columns named like operators, or with dots
		{"eq=eq.eq", true},
		{"eq=neq.eq", false},
		{"in=in.(1,2)", true},
		{"in=eq.2", true},
		{"a.b=eq.dotted", true},
		// values may hold '=' and '.'
		{"status=eq.pa=id", false},
		// conjunctions
		{"status=eq.paid&id=eq.7", true},
		{"status=eq.paid&id=eq.8", false},
		{"id=gt.1&id=lt.10&flag=is.true", true},
		{"id=gt.1&id=lt.5", false},
	}
	for _, tt := range tests {
		t.Run(tt.filter, func(t *testing.T) {
			f, err := ParseFilter(tt.filter)
			if err != nil {
				t.Fatal(err)
			}
			if got := f.Match(row); got != tt.want {
				t.Errorf("Match = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestFilterMatchNonObject(t *testing.T) {
	f, err := ParseFilter("missing=is.null")
	if err != nil {
		t.Fatal(err)
	}
	for _, data := range []string{``, `null`, `[]`, `[{"a":1}]`, `"x"`, `3`, `{`, `{"a":1}x`} {
		row, err := ParseRow(json.RawMessage(data))
		if err == nil {
			t.Errorf("ParseRow(%q) succeeded", data)
		}
		if f.Match(row) {
			t.Errorf("a filter matched the non-object %q", data)
		}
		if !(Filter{}).Match(row) {
			t.Errorf("the empty filter must match everything, %q too", data)
		}
	}
	row, err := ParseRow(json.RawMessage(` {} `))
	if err != nil || !f.Match(row) {
		t.Fatalf("empty object: %v, want missing=is.null to match", err)
	}
}

func TestFilterCovers(t *testing.T) {
	row, err := ParseRow(json.RawMessage(`{"id":1,"archived_at":null}`))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		filter string
		want   bool
	}{
		{"id=eq.1", true},
		{"archived_at=is.null", true}, // carried, as a JSON null
		{"id=gt.0&archived_at=is.null", true},
		{"customer_id=is.null", false}, // not carried: Match alone would pass it
		{"id=eq.1&customer_id=eq.7", false},
	} {
		f, err := ParseFilter(c.filter)
		if err != nil {
			t.Fatal(err)
		}
		if got := f.Covers(row); got != c.want {
			t.Errorf("%q covers %v, want %v", c.filter, got, c.want)
		}
	}
	if !(Filter{}).Covers(Row{}) {
		t.Error("the empty filter names no column: it covers every row")
	}
}

func TestParseFilterErrors(t *testing.T) {
	tests := []struct {
		filter string
		want   string
	}{
		{"", "empty"},
		{"name=like.x", `unknown operator "like" in "name=like.x"; want eq, neq, gt, gte, lt, lte, in or is`},
		{"a=eq.1&name=like.x&b=eq.2", `unknown operator "like" in "name=like.x"`},
		{"name=EQ.x", `unknown operator "EQ"`},
		{"name=.x", `unknown operator ""`},
		{"status", `missing '=' in "status"; want column=op.value`},
		{"a=eq.1&status", `missing '=' in "status"`},
		{"=eq.1", `empty column name in "=eq.1"`},
		{"a=eq", `missing '.' and value after operator "eq" in "a=eq"`},
		{"a=eq&b=eq.1", `missing '.' and value after operator "eq" in "a=eq"`},
		{"a=is.nul", `bad value "nul" for is in "a=is.nul"; want is.null, is.true or is.false`},
		{"a=is.NULL", `bad value "NULL" for is`},
		{"a=is.", `bad value "" for is`},
		{"&a=eq.1", "empty condition"},
		{"a=eq.1&", "empty condition"},
		{"a=eq.1&&b=eq.2", "empty condition"},
		{"&", "empty condition"},
		{"a=in.1,2", `malformed in list in "a=in.1,2": the list must start with '('`},
		{"a=in.", "the list must start with '('"},
		{"a=in.()", "the list is empty"},
		{"a=in.(1,2", "missing ')'"},
		{"a=in.(1,2&b=eq.1", "missing ')'"},
		{"a=in.(1,,2)", "empty item"},
		{"a=in.(1,)", "empty item"},
		{`a=in.("x`, "unterminated quoted item"},
		{`a=in.("x\")`, "unterminated quoted item"},
		{`a=in.("x"y)`, `"y" after a quoted item`},
		{`a=in.("x"`, "missing ')'"},
		{"a=in.(1)x", `unexpected "x" after the in list in "a=in.(1)x"`},
		{"a=in.(1)=eq.2", `unexpected "=" after the in list`},
		{strings.Repeat("a", MaxFilterLen-4) + "=eq.1", "longer than 1024 bytes"},
		{strings.Repeat("a=eq.1&", MaxFilterConditions) + "a=eq.1", "more than 16 conditions"},
	}
	for _, tt := range tests {
		t.Run(shorten(tt.filter), func(t *testing.T) {
			_, err := ParseFilter(tt.filter)
			if !errors.Is(err, ErrBadFilter) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error = %v, want ErrBadFilter saying %q", err, tt.want)
			}
		})
	}
	// The limits themselves are allowed.
	for _, s := range []string{strings.Repeat("a", MaxFilterLen-4) + "=eq.", strings.TrimSuffix(strings.Repeat("a=eq.1&", MaxFilterConditions), "&")} {
		if _, err := ParseFilter(s); err != nil {
			t.Errorf("filter at the limit: %v", err)
		}
	}
}

// shorten keeps subtest names readable.
func shorten(s string) string {
	if len(s) > 40 {
		return s[:37] + "..."
	}
	return s
}

func TestFilterString(t *testing.T) {
	tests := []struct{ in, want string }{
		{"a=eq.1", "a=eq.1"},
		{"eq=eq.eq&in=in.(1,2)", "eq=eq.eq&in=in.(1,2)"},
		{`a=in.("x",y,"a,b","",")","q\"\\",p"q)`, `a=in.(x,y,"a,b","",")",q"\,p"q)`},
		{`a=in.("\"lead")`, `a=in.("\"lead")`},
		{`a=in.("x&y")&b=is.null`, `a=in.(x&y)&b=is.null`},
	}
	for _, tt := range tests {
		f, err := ParseFilter(tt.in)
		if err != nil {
			t.Fatalf("%s: %v", tt.in, err)
		}
		if got := f.String(); got != tt.want {
			t.Errorf("String(%s) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

func TestFilterAnd(t *testing.T) {
	client, _ := ParseFilter("customer_id=eq.8")
	forced, _ := ParseFilter("customer_id=eq.7")
	both := forced.And(client)
	if both.String() != "customer_id=eq.7&customer_id=eq.8" {
		t.Fatalf("And = %s", both)
	}
	for _, data := range []string{`{"customer_id":7}`, `{"customer_id":8}`} {
		row, _ := ParseRow(json.RawMessage(data))
		if both.Match(row) {
			t.Errorf("%s matched %s", both, data)
		}
	}
	if !(Filter{}).And(Filter{}).IsZero() || forced.And(Filter{}).String() != forced.String() || (Filter{}).And(client).String() != client.String() {
		t.Error("And with the zero Filter must return the other")
	}
	// And must not share its result's backing array with an operand.
	a, _ := ParseFilter("a=eq.1&b=eq.2")
	a1 := Filter{conds: a.conds[:1:2]}
	x, y := a1.And(forced), a1.And(client)
	if x.String() != "a=eq.1&customer_id=eq.7" || y.String() != "a=eq.1&customer_id=eq.8" {
		t.Errorf("And results interfere: %s, %s", x, y)
	}
}

// TestDecimalCompare checks the exact comparison against math/big on
// random decimals written in various forms.
func TestDecimalCompare(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	write := func() string {
		var b strings.Builder
		if r.IntN(3) == 0 {
			b.WriteByte('-')
		}
		for i, n := 0, r.IntN(4); i < n; i++ {
			b.WriteByte(byte('0' + r.IntN(10)))
		}
		if r.IntN(2) == 0 || b.Len() == 0 || b.String() == "-" {
			b.WriteByte('.')
			for i, n := 0, 1+r.IntN(4); i < n; i++ {
				b.WriteByte(byte('0' + r.IntN(10)))
			}
		}
		if r.IntN(3) == 0 {
			fmt.Fprintf(&b, "e%d", r.IntN(9)-4)
		}
		return b.String()
	}
	for i := 0; i < 20000; i++ {
		a, b := write(), write()
		da, ok1 := parseDecimal(a)
		db, ok2 := parseDecimal(b)
		ra, ok3 := new(big.Rat).SetString(a)
		rb, ok4 := new(big.Rat).SetString(b)
		if !ok1 || !ok2 || !ok3 || !ok4 {
			t.Fatalf("parse %q %q: %v %v %v %v", a, b, ok1, ok2, ok3, ok4)
		}
		if got, want := da.cmp(&db), ra.Cmp(rb); got != want {
			t.Fatalf("cmp(%q, %q) = %d, want %d", a, b, got, want)
		}
	}
	for _, s := range []string{"", "-", "+", ".", "e5", "1e", "1e+", "1.2.3", "0x10", "1_000", "Inf", "NaN", " 1", "1 "} {
		if _, ok := parseDecimal(s); ok {
			t.Errorf("parseDecimal(%q) succeeded", s)
		}
	}
}

func TestFilterMatchAllocs(t *testing.T) {
	row, _ := ParseRow(json.RawMessage(testRow))
	f, _ := ParseFilter("status=in.(new,paid)&big=gt.1e19&id=eq.7")
	if n := testing.AllocsPerRun(100, func() { f.Match(row) }); n != 0 {
		t.Errorf("Match allocated %v times", n)
	}
}

// FuzzParseFilter: parsing never panics, and an accepted filter's String
// parses back to the same filter.
func FuzzParseFilter(f *testing.F) {
	for _, s := range []string{
		"status=eq.paid", "a=in.(1,2)&b=is.null", `a=in.("x,y",z,"")`, "eq=eq.eq",
		"in=in.(in)", "a=gt.1e5&b=lte.-0.5", "name=like.x", "a=in.(", `a=in.("\`, "&", "=",
		"a=is.true&a=is.false", `x=in.("a\"b",")")&y=neq.&z=eq.=`,
	} {
		f.Add(s)
	}
	row, _ := ParseRow(json.RawMessage(testRow))
	f.Fuzz(func(t *testing.T, s string) {
		flt, err := ParseFilter(s)
		if err != nil {
			if !errors.Is(err, ErrBadFilter) {
				t.Fatalf("error %v does not wrap ErrBadFilter", err)
			}
			return
		}
		if flt.IsZero() {
			t.Fatalf("accepted %q as a filter without conditions", s)
		}
		flt.Match(row)
		canon := flt.String()
		back, err := ParseFilter(canon)
		if err != nil {
			t.Fatalf("%q: String() %q does not parse: %v", s, canon, err)
		}
		if !reflect.DeepEqual(back, flt) || back.String() != canon {
			t.Fatalf("%q: round trip through %q changed the filter", s, canon)
		}
	})
}

// FuzzFilterMatch evaluates filters on arbitrary data: never a panic, and
// data that is not an object matches no filter.
func FuzzFilterMatch(f *testing.F) {
	f.Add("id=eq.7", `{"id":7}`)
	f.Add("a=in.(1,x)&b=is.null", `{"a":1.0,"b":null}`)
	f.Add("a=gt.1e999999999999999999", `{"a":1e999999999999999999}`)
	f.Add("a=is.null", `[1]`)
	f.Fuzz(func(t *testing.T, filter, data string) {
		flt, err := ParseFilter(filter)
		if err != nil {
			return
		}
		row, err := ParseRow(json.RawMessage(data))
		if matched := flt.Match(row); matched && err != nil {
			t.Fatalf("%q matched %q, which is not an object (%v)", filter, data, err)
		}
	})
}
