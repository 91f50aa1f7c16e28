package emulator

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Filter is a parsed OData $filter: comparisons joined by `and`, as the PAM documentation lists
// them (eq, ne, gt, lt, ge, le, and; `or` is not supported by PAM and is refused here too).
type Filter struct {
	root node
}

// Match reports whether an object with the given properties passes the filter. Property names
// are matched case-insensitively; values are string, time.Time, int64, bool or nil.
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

type node interface {
	eval(props map[string]any) bool
}

type andNode struct{ left, right node }

func (n andNode) eval(p map[string]any) bool { return n.left.eval(p) && n.right.eval(p) }

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
	property string
	op       string
	value    literal
}

func (n compareNode) eval(p map[string]any) bool {
	v, ok := p[n.property]
	if !ok {
		return false
	}
	var cmp int
	switch n.value.kind {
	case litNull:
		isNull := v == nil || v == "" || (isTime(v) && v.(time.Time).IsZero())
		switch n.op {
		case "eq":
			return isNull
		case "ne":
			return !isNull
		}
		return false
	case litString, litGUID:
		s, ok := v.(string)
		if !ok {
			return false
		}
		if n.value.kind == litGUID {
			cmp = strings.Compare(strings.ToLower(s), strings.ToLower(n.value.str))
		} else {
			cmp = strings.Compare(s, n.value.str)
		}
	case litDateTime:
		t, ok := v.(time.Time)
		if !ok {
			return false
		}
		cmp = t.Compare(n.value.time)
	case litNumber:
		i, ok := v.(int64)
		if !ok {
			return false
		}
		cmp = compareInts(i, n.value.num)
	case litBool:
		b, ok := v.(bool)
		if !ok || (n.op != "eq" && n.op != "ne") {
			return false
		}
		return (b == n.value.b) == (n.op == "eq")
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

func isTime(v any) bool { _, ok := v.(time.Time); return ok }

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

// ParseFilter parses an OData $filter expression. An empty expression matches everything.
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
	if p.pos != len(p.toks) {
		return Filter{}, fmt.Errorf("unexpected %q after the expression", p.toks[p.pos].text)
	}
	return Filter{root: root}, nil
}

type tokenKind int

const (
	tokIdent tokenKind = iota
	tokLiteral
	tokOpen
	tokClose
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
		case c == ' ' || c == '\t':
			i++
		case c == '(':
			toks = append(toks, token{kind: tokOpen, text: "("})
			i++
		case c == ')':
			toks = append(toks, token{kind: tokClose, text: ")"})
			i++
		case c == '\'':
			str, n, err := quoted(s[i:])
			if err != nil {
				return nil, err
			}
			toks = append(toks, token{kind: tokLiteral, text: s[i : i+n], lit: literal{kind: litString, str: str}})
			i += n
		case c == '-' || (c >= '0' && c <= '9'):
			j := i + 1
			for j < len(s) && s[j] >= '0' && s[j] <= '9' {
				j++
			}
			num, err := strconv.ParseInt(s[i:j], 10, 64)
			if err != nil {
				return nil, fmt.Errorf("%q is not a number", s[i:j])
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
			return nil, fmt.Errorf("unexpected character %q at offset %d", c, i)
		}
	}
	return toks, nil
}

// quoted reads a single-quoted string at the start of s, where ” stands for one quote, and
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
	return "", 0, fmt.Errorf("unterminated string literal")
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
	case "datetime":
		t, err := parseDateTime(str)
		if err != nil {
			return literal{}, 0, fmt.Errorf("datetime'%s' is not a date and time", str)
		}
		return literal{kind: litDateTime, time: t}, n, nil
	}
	return literal{}, 0, fmt.Errorf("unsupported literal type %q", prefix)
}

func parseDateTime(s string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	return time.Parse("2006-01-02T15:04:05.999999999", s)
}

func isIdentStart(c byte) bool {
	return c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
}

func isIdentPart(c byte) bool { return isIdentStart(c) || (c >= '0' && c <= '9') || c == '.' }

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

func (p *parser) expr(depth int) (node, error) {
	left, err := p.term(depth)
	if err != nil {
		return nil, err
	}
	for {
		t := p.peek()
		if t == nil || t.kind != tokIdent {
			return left, nil
		}
		switch strings.ToLower(t.text) {
		case "and":
			p.pos++
			right, err := p.term(depth)
			if err != nil {
				return nil, err
			}
			left = andNode{left: left, right: right}
		case "or":
			return nil, fmt.Errorf("the operator 'or' is not supported; PAM filters support eq, ne, gt, lt, ge, le and 'and'")
		default:
			return nil, fmt.Errorf("expected 'and', got %q", t.text)
		}
	}
}

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
		if c := p.peek(); c == nil || c.kind != tokClose {
			return nil, fmt.Errorf("missing ')'")
		}
		p.pos++
		return inner, nil
	}
	if t.kind != tokIdent {
		return nil, fmt.Errorf("expected a property name, got %q", t.text)
	}
	prop := t.text
	p.pos++
	opTok := p.peek()
	if opTok == nil || opTok.kind != tokIdent {
		return nil, fmt.Errorf("expected an operator after %q", prop)
	}
	op := strings.ToLower(opTok.text)
	switch op {
	case "eq", "ne", "gt", "lt", "ge", "le":
	default:
		return nil, fmt.Errorf("unsupported operator %q; supported: eq, ne, gt, lt, ge, le", opTok.text)
	}
	p.pos++
	val := p.peek()
	if val == nil || val.kind != tokLiteral {
		return nil, fmt.Errorf("expected a value after %q %s", prop, op)
	}
	p.pos++
	return compareNode{property: strings.ToLower(prop), op: op, value: val.lit}, nil
}
