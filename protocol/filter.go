package protocol

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"strconv"
	"strings"
)

// Row filters: the grammar of a subscribe request's "filter" and of a
// token's forced "filters", and their evaluation on a table event's row.
//
// A filter is a conjunction of conditions joined by '&':
//
//	column=op.value&column=op.value...
//
// The column is everything before the condition's first '=' (non-empty, no
// '=' or '&'); the operator runs from there to the next '.'; the value is
// the rest of the condition, taken literally up to the next '&' (or, for
// in, a parenthesised list). So a column may be named like an operator:
// "eq=eq.1" and "in=in.(1,2)" parse.
//
//	eq neq gt gte lt lte   compare the column with the value
//	in.(a,b,"c,d")          equal to one of the items; an item in double
//	                        quotes may hold ',' ')' '&' and, escaped with a
//	                        backslash, '"' and '\'
//	is.null is.true is.false
//
// Comparison: when the column's value is a JSON number and the filter's
// value reads as a decimal number, the two compare as exact decimals (any
// number of digits, never rounded through a float64). Otherwise they
// compare as strings, byte by byte: a JSON string by its unescaped value,
// any other JSON value (a number against a non-numeric filter value, true,
// false, an object, an array) by its JSON text, objects and arrays
// compacted. So "flag=eq.true" matches the JSON boolean true too.
//
// NULL: a column the row lacks counts as NULL, like a JSON null. NULL
// matches is.null and nothing else: every comparison, in and neq included,
// is false on it, as in SQL. A filter on a hidden or misspelled column thus
// matches no row except with is.null.

// Filter limits.
const (
	MaxFilterLen        = 1024 // bytes of one filter string
	MaxFilterConditions = 16   // conditions in one filter string
)

// ErrBadFilter is wrapped by every ParseFilter error.
var ErrBadFilter = errors.New("protocol: invalid filter")

type filterOp uint8

const (
	opEq filterOp = iota
	opNeq
	opGt
	opGte
	opLt
	opLte
	opIn
	opIs
)

var opNames = [...]string{opEq: "eq", opNeq: "neq", opGt: "gt", opGte: "gte", opLt: "lt", opLte: "lte", opIn: "in", opIs: "is"}

const opList = "eq, neq, gt, gte, lt, lte, in or is"

// Filter is a parsed row filter: a conjunction of conditions. The zero
// Filter has no condition and matches every row. A Filter is immutable and
// safe for concurrent use.
type Filter struct {
	conds []condition
}

type condition struct {
	column string
	op     filterOp
	value  operand   // every op but in; for is: "null", "true" or "false"
	items  []operand // in
}

// operand is a value of a condition, with its decimal reading when it has
// one.
type operand struct {
	text  string
	num   decimal
	isNum bool
}

func newOperand(text string) operand {
	num, ok := parseDecimal(text)
	return operand{text: text, num: num, isNum: ok}
}

// ParseFilter parses a filter string. Its errors wrap ErrBadFilter and
// quote the offending condition.
func ParseFilter(s string) (Filter, error) {
	switch {
	case s == "":
		return Filter{}, fmt.Errorf("%w: empty", ErrBadFilter)
	case len(s) > MaxFilterLen:
		return Filter{}, fmt.Errorf("%w: longer than %d bytes", ErrBadFilter, MaxFilterLen)
	}
	var f Filter
	for rest := s; ; {
		if len(f.conds) == MaxFilterConditions {
			return Filter{}, fmt.Errorf("%w: more than %d conditions", ErrBadFilter, MaxFilterConditions)
		}
		c, n, err := parseCondition(rest)
		if err != nil {
			return Filter{}, fmt.Errorf("%w: %v", ErrBadFilter, err)
		}
		f.conds = append(f.conds, c)
		rest = rest[n:]
		if rest == "" {
			return f, nil
		}
		rest = rest[1:] // the '&' parseCondition stopped at
	}
}

// parseCondition parses the condition at the start of s and returns it with
// its length: s[n:] is empty or starts with the '&' before the next one.
func parseCondition(s string) (condition, int, error) {
	// part is the condition as far as a plain scan can tell, for errors.
	part := s
	if i := strings.IndexByte(s, '&'); i >= 0 {
		part = s[:i]
	}
	if part == "" {
		return condition{}, 0, errors.New("empty condition (a leading, trailing or doubled '&')")
	}
	eq := strings.IndexByte(part, '=')
	switch {
	case eq < 0:
		return condition{}, 0, fmt.Errorf("missing '=' in %q; want column=op.value", part)
	case eq == 0:
		return condition{}, 0, fmt.Errorf("empty column name in %q; want column=op.value", part)
	}
	c := condition{column: part[:eq]}
	opAndValue := part[eq+1:]
	name, value, dotted := strings.Cut(opAndValue, ".")
	op, known := opByName(name)
	switch {
	case !known:
		return condition{}, 0, fmt.Errorf("unknown operator %q in %q; want %s", name, part, opList)
	case !dotted:
		return condition{}, 0, fmt.Errorf("missing '.' and value after operator %q in %q; want column=op.value", name, part)
	}
	c.op = op
	switch op {
	case opIs:
		if value != "null" && value != "true" && value != "false" {
			return condition{}, 0, fmt.Errorf("bad value %q for is in %q; want is.null, is.true or is.false", value, part)
		}
		c.value = operand{text: value}
	case opIn:
		// The list may hold quoted '&': scan it in s, not in part.
		start := eq + 1 + len("in.")
		items, n, err := parseList(s[start:])
		if err != nil {
			return condition{}, 0, fmt.Errorf("malformed in list in %q: %v; want in.(a,b,...)", s, err)
		}
		c.items = items
		end := start + n
		if end < len(s) && s[end] != '&' {
			return condition{}, 0, fmt.Errorf("unexpected %q after the in list in %q; join conditions with '&'", s[end:end+1], s)
		}
		return c, end, nil
	default:
		c.value = newOperand(value)
	}
	return c, len(part), nil
}

func opByName(name string) (filterOp, bool) {
	for op, n := range opNames {
		if n == name {
			return filterOp(op), true
		}
	}
	return 0, false
}

// parseList parses "(item,item,...)" at the start of s and returns the
// items and the length of the list, closing parenthesis included.
func parseList(s string) ([]operand, int, error) {
	if s == "" || s[0] != '(' {
		return nil, 0, errors.New("the list must start with '('")
	}
	if strings.HasPrefix(s, "()") {
		return nil, 0, errors.New("the list is empty")
	}
	var items []operand
	for i := 1; ; {
		var item string
		if i < len(s) && s[i] == '"' {
			var b strings.Builder
			for i++; ; i++ {
				if i >= len(s) {
					return nil, 0, errors.New("unterminated quoted item")
				}
				if s[i] == '"' {
					i++
					break
				}
				if s[i] == '\\' && i+1 < len(s) {
					i++
				}
				b.WriteByte(s[i])
			}
			item = b.String()
			if i < len(s) && s[i] != ',' && s[i] != ')' {
				return nil, 0, fmt.Errorf("%q after a quoted item; want ',' or ')'", s[i:i+1])
			}
		} else {
			j := strings.IndexAny(s[i:], ",)")
			if j < 0 {
				return nil, 0, errors.New("missing ')'")
			}
			if j == 0 {
				return nil, 0, errors.New(`empty item (write "" for an empty string)`)
			}
			item = s[i : i+j]
			i += j
		}
		items = append(items, newOperand(item))
		if i >= len(s) {
			return nil, 0, errors.New("missing ')'")
		}
		if s[i] == ')' {
			return items, i + 1, nil
		}
		i++ // ','
	}
}

// IsZero reports whether f has no condition (and so matches every row).
func (f Filter) IsZero() bool { return len(f.conds) == 0 }

// And returns the filter that matches the rows both f and g match.
func (f Filter) And(g Filter) Filter {
	switch {
	case len(f.conds) == 0:
		return g
	case len(g.conds) == 0:
		return f
	}
	conds := make([]condition, 0, len(f.conds)+len(g.conds))
	return Filter{conds: append(append(conds, f.conds...), g.conds...)}
}

// String returns f in canonical form: ParseFilter(f.String()) is f again
// (the zero Filter gives "", which ParseFilter refuses).
func (f Filter) String() string {
	var b strings.Builder
	for i, c := range f.conds {
		if i > 0 {
			b.WriteByte('&')
		}
		b.WriteString(c.column)
		b.WriteByte('=')
		b.WriteString(opNames[c.op])
		b.WriteByte('.')
		if c.op != opIn {
			b.WriteString(c.value.text)
			continue
		}
		b.WriteByte('(')
		for j, it := range c.items {
			if j > 0 {
				b.WriteByte(',')
			}
			writeItem(&b, it.text)
		}
		b.WriteByte(')')
	}
	return b.String()
}

// writeItem writes an in-list item, quoted when it must be.
func writeItem(b *strings.Builder, s string) {
	if s != "" && s[0] != '"' && !strings.ContainsAny(s, ",)") {
		b.WriteString(s)
		return
	}
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		if s[i] == '"' || s[i] == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	b.WriteByte('"')
}

// Match reports whether row passes every condition of f. A filter with a
// condition matches no row that is not a JSON object (see ParseRow).
func (f Filter) Match(row Row) bool {
	if len(f.conds) == 0 {
		return true
	}
	if row.cols == nil {
		return false
	}
	for i := range f.conds {
		if !f.conds[i].match(row.cols) {
			return false
		}
	}
	return true
}

// Covers reports whether row carries every column f names, NULL or not.
// A row that lacks one (a truncated event's, which holds only the primary
// key) cannot show whether it passes f: where that must fail closed, ask
// Covers before Match.
func (f Filter) Covers(row Row) bool {
	for i := range f.conds {
		if _, ok := row.cols[f.conds[i].column]; !ok {
			return false
		}
	}
	return true
}

func (c *condition) match(cols map[string]rowValue) bool {
	v, ok := cols[c.column]
	if !ok || v.kind == kindNull {
		return c.op == opIs && c.value.text == "null"
	}
	switch c.op {
	case opIs:
		return v.kind == kindBool && v.text == c.value.text
	case opIn:
		for i := range c.items {
			if v.compare(&c.items[i]) == 0 {
				return true
			}
		}
		return false
	}
	r := v.compare(&c.value)
	switch c.op {
	case opEq:
		return r == 0
	case opNeq:
		return r != 0
	case opGt:
		return r > 0
	case opGte:
		return r >= 0
	case opLt:
		return r < 0
	default: // opLte
		return r <= 0
	}
}

// Row is a table event's row, decoded once for evaluating any number of
// filters. The zero Row is not an object: it matches no filter that has a
// condition.
type Row struct {
	cols map[string]rowValue // nil when the data was not a JSON object
}

type valueKind uint8

const (
	kindNull valueKind = iota
	kindNumber
	kindString
	kindBool
	kindOther // object or array
)

type rowValue struct {
	kind valueKind
	text string  // a string's unescaped value, or the JSON text (compacted)
	num  decimal // kindNumber
}

// compare orders v against a filter operand: as decimals when both are
// numbers, else as strings.
func (v *rowValue) compare(o *operand) int {
	if v.kind == kindNumber && o.isNum {
		return v.num.cmp(&o.num)
	}
	return strings.Compare(v.text, o.text)
}

// ParseRow decodes a row (an event's data) for Filter.Match. Data that is
// not a JSON object is an error, and the Row returned with it matches no
// filter that has a condition.
func ParseRow(data json.RawMessage) (Row, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return Row{}, fmt.Errorf("protocol: row is not a JSON object: %w", err)
	}
	if raw == nil { // null
		return Row{}, errors.New("protocol: row is not a JSON object: null")
	}
	cols := make(map[string]rowValue, len(raw))
	for k, v := range raw {
		rv, err := decodeValue(v)
		if err != nil {
			return Row{}, fmt.Errorf("protocol: row column %q: %w", k, err)
		}
		cols[k] = rv
	}
	return Row{cols: cols}, nil
}

// decodeValue classifies one valid JSON value.
func decodeValue(v json.RawMessage) (rowValue, error) {
	switch v[0] {
	case 'n':
		return rowValue{kind: kindNull}, nil
	case 't', 'f':
		return rowValue{kind: kindBool, text: string(v)}, nil
	case '"':
		if bytes.IndexByte(v, '\\') < 0 {
			return rowValue{kind: kindString, text: string(v[1 : len(v)-1])}, nil
		}
		var s string
		err := json.Unmarshal(v, &s)
		return rowValue{kind: kindString, text: s}, err
	case '{', '[':
		var b bytes.Buffer
		err := json.Compact(&b, v)
		return rowValue{kind: kindOther, text: b.String()}, err
	}
	text := string(v)
	num, ok := parseDecimal(text)
	if !ok {
		return rowValue{}, fmt.Errorf("unexpected JSON value %q", text)
	}
	return rowValue{kind: kindNumber, text: text, num: num}, nil
}

// decimal is an exact reading of a number's text, without rounding:
// ±0.DIGITS × 10^exp, where DIGITS = hi+lo (two substrings of the text, on
// either side of its decimal point) has no leading or trailing zero, and
// is empty for zero. bigExp replaces exp in the rare case of an exponent
// too long for an int64.
type decimal struct {
	neg    bool
	hi, lo string
	exp    int64
	bigExp *big.Int
}

// maxExpDigits is the longest explicit exponent kept in an int64; adding a
// text's length to it cannot overflow.
const maxExpDigits = 15

// parseDecimal reads [+-]digits[.digits][(e|E)[+-]digits], where either
// the integer or the fraction digits may be missing (but not both): JSON
// numbers and the looser forms a person writes in a filter (+5, 007, .5).
func parseDecimal(s string) (decimal, bool) {
	var d decimal
	i := 0
	if i < len(s) && (s[i] == '+' || s[i] == '-') {
		d.neg = s[i] == '-'
		i++
	}
	intStart := i
	i = skipDigits(s, i)
	intPart := s[intStart:i]
	var frac string
	if i < len(s) && s[i] == '.' {
		i++
		fracStart := i
		i = skipDigits(s, i)
		frac = s[fracStart:i]
	}
	if intPart == "" && frac == "" {
		return decimal{}, false
	}
	expNeg, expDigits := false, ""
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			expNeg = s[i] == '-'
			i++
		}
		expStart := i
		i = skipDigits(s, i)
		if i == expStart {
			return decimal{}, false
		}
		expDigits = strings.TrimLeft(s[expStart:i], "0")
	}
	if i != len(s) {
		return decimal{}, false
	}

	// Normalise to 0.DIGITS × 10^offset, then add the explicit exponent.
	var offset int64
	intPart = strings.TrimLeft(intPart, "0")
	if intPart != "" {
		d.hi, d.lo = intPart, strings.TrimRight(frac, "0")
		if d.lo == "" {
			d.hi = strings.TrimRight(d.hi, "0")
		}
		offset = int64(len(intPart))
	} else {
		lead := len(frac) - len(strings.TrimLeft(frac, "0"))
		d.lo = strings.TrimRight(frac[lead:], "0")
		offset = -int64(lead)
	}
	if d.hi == "" && d.lo == "" {
		return decimal{}, true // zero, whatever its sign and exponent
	}
	if len(expDigits) > maxExpDigits {
		e, _ := new(big.Int).SetString(expDigits, 10)
		if expNeg {
			e.Neg(e)
		}
		d.bigExp = e.Add(e, big.NewInt(offset))
		return d, true
	}
	e, _ := strconv.ParseInt("0"+expDigits, 10, 64)
	if expNeg {
		e = -e
	}
	d.exp = offset + e
	return d, true
}

func skipDigits(s string, i int) int {
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	return i
}

func (d *decimal) sign() int {
	switch {
	case d.hi == "" && d.lo == "":
		return 0
	case d.neg:
		return -1
	}
	return 1
}

// cmp compares two decimals exactly: -1, 0 or +1.
func (d *decimal) cmp(e *decimal) int {
	ds, es := d.sign(), e.sign()
	if ds != es || ds == 0 {
		return cmp.Compare(ds, es)
	}
	r := d.cmpExp(e)
	if r == 0 {
		r = cmpDigits(d.hi, d.lo, e.hi, e.lo)
	}
	return r * ds
}

func (d *decimal) cmpExp(e *decimal) int {
	if d.bigExp == nil && e.bigExp == nil {
		return cmp.Compare(d.exp, e.exp)
	}
	return d.bigExponent().Cmp(e.bigExponent())
}

func (d *decimal) bigExponent() *big.Int {
	if d.bigExp != nil {
		return d.bigExp
	}
	return big.NewInt(d.exp)
}

// cmpDigits compares the digit strings a1+a2 and b1+b2 as the fractions
// 0.a1a2 and 0.b1b2, without concatenating them.
func cmpDigits(a1, a2, b1, b2 string) int {
	n, m := len(a1)+len(a2), len(b1)+len(b2)
	for i := 0; i < n && i < m; i++ {
		if ca, cb := digitAt(a1, a2, i), digitAt(b1, b2, i); ca != cb {
			return cmp.Compare(ca, cb)
		}
	}
	return cmp.Compare(n, m) // no trailing zeros: the longer is larger
}

func digitAt(s1, s2 string, i int) byte {
	if i < len(s1) {
		return s1[i]
	}
	return s2[i-len(s1)]
}
