package emulator

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Filter is a parsed OData $filter: comparisons joined by `and`, as the PAM documentation lists
// them (eq, ne, gt, lt, ge, le, and). `or` is not documented for PAM, so it is refused. The zero
// Filter matches everything.
type Filter struct {
	root node
}

// Match reports whether an object with the given properties passes the filter. Property names
// are matched case-insensitively. Values may be string, int64, time.Time, bool or nil; a property
// that is missing, or whose type the literal cannot be compared with, does not match.
func (f Filter) Match(props map[string]any) bool {
	if f.root == nil {
		return true
	}
	lower := make(map[string]any, len(props))
	for k, v := range props {
		lower[strings.ToLower(k)] = v
	}
	return f.root.eval(lower)
}

// Properties returns the property names the filter refers to, as written, so a server can refuse
// names its resource does not have.
func (f Filter) Properties() []string {
	var out []string
	var walk func(n node)
	walk = func(n node) {
		switch n := n.(type) {
		case andNode:
			for _, c := range n {
				walk(c)
			}
		case compareNode:
			out = append(out, n.name)
		}
	}
	if f.root != nil {
		walk(f.root)
	}
	return out
}

// Equals returns the value the filter requires of a property, when a top-level `property eq
// value` comparison (alone or in the conjunction) pins it to a string or GUID, so that a server
// can look the object up instead of scanning everything.
func (f Filter) Equals(property string) (string, bool) {
	property = strings.ToLower(property)
	pinned := func(n node) (string, bool) {
		c, ok := n.(compareNode)
		if ok && c.property == property && c.op == "eq" && (c.value.kind == litString || c.value.kind == litGUID) {
			return c.value.str, true
		}
		return "", false
	}
	if and, ok := f.root.(andNode); ok {
		for _, c := range and {
			if v, ok := pinned(c); ok {
				return v, true
			}
		}
		return "", false
	}
	return pinned(f.root)
}

type node interface {
	eval(props map[string]any) bool
}

// andNode is a flat conjunction, so a long chain of `and` does not nest deeply.
type andNode []node

func (n andNode) eval(p map[string]any) bool {
	for _, c := range n {
		if !c.eval(p) {
			return false
		}
	}
	return true
}

type literalKind int

const (
	litString literalKind = iota
	litGUID
	litDateTime
	litNumber
	litBool
	litNull
)

type literal struct {
	kind literalKind
	str  string
	time time.Time
	num  int64
	b    bool
}

type compareNode struct {
	name     string // as written, for error messages and Properties
	property string // lower case, for lookup
	op       string
	value    literal
}

func (n compareNode) eval(p map[string]any) bool {
	v, ok := p[n.property]
	if !ok {
		return false
	}
	if n.value.kind == litNull {
		null := isNull(v)
		switch n.op {
		case "eq":
			return null
		case "ne":
			return !null
		}
		return false
	}
	cmp, comparable := compare(v, n.value)
	if !comparable {
		return false
	}
	switch n.op {
	case "eq":
		return cmp == 0
	case "ne":
		return cmp != 0
	case "gt":
		return cmp > 0
	case "lt":
		return cmp < 0
	case "ge":
		return cmp >= 0
	case "le":
		return cmp <= 0
	}
	return false
}

// isNull treats PAM's empty values as null: no value, "", and the unset (zero) time.
func isNull(v any) bool {
	switch v := v.(type) {
	case nil:
		return true
	case string:
		return v == ""
	case time.Time:
		return v.IsZero()
	}
	return false
}

// compare orders a property value against a literal. PAM writes numbers as strings, so a string
// literal is also compared with a number or a time when it parses as one.
func compare(v any, lit literal) (int, bool) {
	switch v := v.(type) {
	case string:
		switch lit.kind {
		case litGUID:
			return strings.Compare(strings.ToLower(v), strings.ToLower(lit.str)), true
		case litString:
			if isGUID(v) && isGUID(lit.str) {
				return strings.Compare(strings.ToLower(v), strings.ToLower(lit.str)), true
			}
			return strings.Compare(v, lit.str), true
		}
	case int64:
		switch lit.kind {
		case litNumber:
			return compareInts(v, lit.num), true
		case litString:
			if n, err := strconv.ParseInt(lit.str, 10, 64); err == nil {
				return compareInts(v, n), true
			}
		}
	case time.Time:
		switch lit.kind {
		case litDateTime:
			return v.Compare(lit.time), true
		case litString:
			if t, err := parseDateTime(lit.str); err == nil {
				return v.Compare(t), true
			}
		}
	case bool:
		if lit.kind == litBool {
			// Only equality is meaningful; ordering false < true keeps gt/lt total and harmless.
			return compareInts(boolInt(v), boolInt(lit.b)), true
		}
	}
	return 0, false
}

func boolInt(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

func compareInts(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// maxFilterDepth bounds parenthesis nesting, so a hostile filter cannot exhaust the stack.
const maxFilterDepth = 32

// ParseFilter parses an OData $filter expression: comparisons `Property op literal` with op one of
// eq, ne, gt, lt, ge, le, joined by `and`, optionally parenthesised. Literals are 'string' (a doubled
// quote for a quote), guid'…', datetime'…' (RFC 3339, no zone meaning UTC), integers, true, false and
// null. An empty expression matches everything. The error says what was not understood.
func ParseFilter(s string) (Filter, error) {
	toks, err := tokenize(s)
	if err != nil {
		return Filter{}, err
	}
	if len(toks) == 0 {
		return Filter{}, nil
	}
	p := &parser{toks: toks}
	root, err := p.expr(0)
	if err != nil {
		return Filter{}, err
	}
	if t := p.peek(); t != nil {
		return Filter{}, fmt.Errorf("unexpected %q after the expression", t.text)
	}
	return Filter{root: root}, nil
}

type tokenKind int

const (
	tokIdent tokenKind = iota
	tokLiteral
	tokOpen
	tokClose
	tokComma // only so that a function call is reported as one
)

type token struct {
	kind tokenKind
	text string
	lit  literal
}

func tokenize(s string) ([]token, error) {
	var toks []token
	i := 0
	for i < len(s) {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\r' || c == '\n':
			i++
		case c == '(':
			toks = append(toks, token{kind: tokOpen, text: "("})
			i++
		case c == ')':
			toks = append(toks, token{kind: tokClose, text: ")"})
			i++
		case c == ',':
			toks = append(toks, token{kind: tokComma, text: ","})
			i++
		case c == '\'':
			str, n, err := quoted(s[i:])
			if err != nil {
				return nil, err
			}
			toks = append(toks, token{kind: tokLiteral, text: s[i : i+n], lit: literal{kind: litString, str: str}})
			i += n
		case c == '-' || isDigit(c):
			j := i + 1
			for j < len(s) && isDigit(s[j]) {
				j++
			}
			num, err := strconv.ParseInt(s[i:j], 10, 64)
			if err != nil {
				return nil, fmt.Errorf("%q is not an integer (only whole numbers are supported)", s[i:j])
			}
			toks = append(toks, token{kind: tokLiteral, text: s[i:j], lit: literal{kind: litNumber, num: num}})
			i = j
		case isIdentStart(c):
			j := i + 1
			for j < len(s) && isIdentPart(s[j]) {
				j++
			}
			word := s[i:j]
			if j < len(s) && s[j] == '\'' {
				lit, n, err := typedLiteral(word, s[j:])
				if err != nil {
					return nil, err
				}
				toks = append(toks, token{kind: tokLiteral, text: s[i : j+n], lit: lit})
				i = j + n
				continue
			}
			switch strings.ToLower(word) {
			case "true", "false":
				toks = append(toks, token{kind: tokLiteral, text: word, lit: literal{kind: litBool, b: strings.EqualFold(word, "true")}})
			case "null":
				toks = append(toks, token{kind: tokLiteral, text: word, lit: literal{kind: litNull}})
			default:
				toks = append(toks, token{kind: tokIdent, text: word})
			}
			i = j
		default:
			return nil, fmt.Errorf("unexpected character %q at offset %d", rune(c), i)
		}
	}
	return toks, nil
}

// quoted reads a single-quoted string at the start of s, where a doubled quote stands for one, and
// returns its value and the number of bytes it took.
func quoted(s string) (string, int, error) {
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		if s[i] != '\'' {
			b.WriteByte(s[i])
			continue
		}
		if i+1 < len(s) && s[i+1] == '\'' {
			b.WriteByte('\'')
			i++
			continue
		}
		return b.String(), i + 1, nil
	}
	return "", 0, fmt.Errorf("unterminated string literal (a quote is missing)")
}

func typedLiteral(prefix, rest string) (literal, int, error) {
	str, n, err := quoted(rest)
	if err != nil {
		return literal{}, 0, err
	}
	switch strings.ToLower(prefix) {
	case "guid":
		if !isGUID(str) {
			return literal{}, 0, fmt.Errorf("guid'%s' is not a GUID", str)
		}
		return literal{kind: litGUID, str: str}, n, nil
	case "datetime", "datetimeoffset":
		t, err := parseDateTime(str)
		if err != nil {
			return literal{}, 0, fmt.Errorf("%s'%s' is not a date and time", prefix, str)
		}
		return literal{kind: litDateTime, time: t}, n, nil
	}
	return literal{}, 0, fmt.Errorf("unsupported literal type %q (supported: guid, datetime)", prefix)
}

// parseDateTime reads RFC 3339 with or without a zone; without one, the time is UTC.
func parseDateTime(s string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	return time.Parse("2006-01-02T15:04:05.999999999", s)
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func isIdentStart(c byte) bool {
	return c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
}

func isIdentPart(c byte) bool { return isIdentStart(c) || isDigit(c) || c == '.' }

type parser struct {
	toks []token
	pos  int
}

func (p *parser) peek() *token {
	if p.pos < len(p.toks) {
		return &p.toks[p.pos]
	}
	return nil
}

// expr parses term (and term)*.
func (p *parser) expr(depth int) (node, error) {
	first, err := p.term(depth)
	if err != nil {
		return nil, err
	}
	terms := andNode{first}
	for {
		t := p.peek()
		if t == nil || t.kind != tokIdent {
			break
		}
		switch strings.ToLower(t.text) {
		case "and":
			p.pos++
			next, err := p.term(depth)
			if err != nil {
				return nil, err
			}
			terms = append(terms, next)
		case "or":
			return nil, fmt.Errorf("the operator 'or' is not supported; PAM filters support eq, ne, gt, lt, ge, le and 'and'")
		default:
			return nil, fmt.Errorf("expected 'and' but found %q", t.text)
		}
	}
	if len(terms) == 1 {
		return first, nil
	}
	return terms, nil
}

// term parses a parenthesised expression or a comparison.
func (p *parser) term(depth int) (node, error) {
	t := p.peek()
	if t == nil {
		return nil, fmt.Errorf("the expression ends where a comparison was expected")
	}
	if t.kind == tokOpen {
		if depth >= maxFilterDepth {
			return nil, fmt.Errorf("parentheses nested deeper than %d", maxFilterDepth)
		}
		p.pos++
		inner, err := p.expr(depth + 1)
		if err != nil {
			return nil, err
		}
		c := p.peek()
		if c == nil {
			return nil, fmt.Errorf("missing ')'")
		}
		if c.kind != tokClose {
			return nil, fmt.Errorf("missing ')' before %q", c.text)
		}
		p.pos++
		return inner, nil
	}
	if t.kind != tokIdent {
		return nil, fmt.Errorf("expected a property name but found %q (the property goes on the left)", t.text)
	}
	name := t.text
	p.pos++
	opTok := p.peek()
	if strings.EqualFold(name, "not") && (opTok == nil || !isComparison(opTok.text)) {
		return nil, fmt.Errorf("the operator 'not' is not supported")
	}
	if opTok != nil && opTok.kind == tokOpen {
		return nil, fmt.Errorf("functions such as %s() are not supported", name)
	}
	if opTok == nil || opTok.kind != tokIdent {
		return nil, fmt.Errorf("expected an operator after %q", name)
	}
	op := strings.ToLower(opTok.text)
	if !isComparison(op) {
		return nil, fmt.Errorf("unsupported operator %q; supported: eq, ne, gt, lt, ge, le", opTok.text)
	}
	p.pos++
	val := p.peek()
	if val == nil || val.kind != tokLiteral {
		return nil, fmt.Errorf("expected a value after %q %s", name, op)
	}
	p.pos++
	return compareNode{name: name, property: strings.ToLower(name), op: op, value: val.lit}, nil
}

func isComparison(op string) bool {
	switch strings.ToLower(op) {
	case "eq", "ne", "gt", "lt", "ge", "le":
		return true
	}
	return false
}
