package routes

import (
	"errors"
	"fmt"
	"strings"
)

// placeholder is one :name in a recipient query; sql[start:end] is its text.
type placeholder struct {
	name       string
	start, end int
}

// scanPlaceholders finds the :name placeholders of a recipient query. It skips what
// PostgreSQL's lexer would not read as a placeholder: ::casts, 'strings' and E'strings'
// with backslash escapes, "quoted identifiers", $tag$dollar quotes$tag$, -- comments and
// nested block comments. Positional parameters ($1) are refused: values are bound by name.
func scanPlaceholders(sql string) ([]placeholder, error) {
	var out []placeholder
	n := len(sql)
	for i := 0; i < n; {
		c := sql[i]
		switch {
		case c == '\'':
			escapes := i > 0 && (sql[i-1] == 'e' || sql[i-1] == 'E') && (i < 2 || !isIdentChar(sql[i-2]))
			end, err := skipQuoted(sql, i, '\'', escapes)
			if err != nil {
				return nil, err
			}
			i = end
		case c == '"':
			end, err := skipQuoted(sql, i, '"', false)
			if err != nil {
				return nil, err
			}
			i = end
		case c == '-' && i+1 < n && sql[i+1] == '-':
			if j := strings.IndexByte(sql[i:], '\n'); j >= 0 {
				i += j + 1
			} else {
				i = n
			}
		case c == '/' && i+1 < n && sql[i+1] == '*':
			depth := 0
			for {
				switch {
				case i+1 >= n:
					return nil, errors.New("unterminated /* comment")
				case sql[i] == '/' && sql[i+1] == '*':
					depth++
					i += 2
				case sql[i] == '*' && sql[i+1] == '/':
					depth--
					i += 2
				default:
					i++
				}
				if depth == 0 {
					break
				}
			}
		case c == '$' && (i == 0 || !isIdentChar(sql[i-1])):
			j := i + 1
			if j < n && sql[j] >= '0' && sql[j] <= '9' {
				return nil, fmt.Errorf("positional parameter at offset %d: use :column placeholders", i)
			}
			for j < n && isIdentChar(sql[j]) && sql[j] != '$' {
				j++
			}
			if j >= n || sql[j] != '$' {
				i = j // a lone $ is PostgreSQL's problem, not a placeholder
				continue
			}
			tag := sql[i : j+1]
			end := strings.Index(sql[j+1:], tag)
			if end < 0 {
				return nil, fmt.Errorf("unterminated dollar-quoted string %s", tag)
			}
			i = j + 1 + end + len(tag)
		case c == ':' && i+1 < n && sql[i+1] == ':':
			i += 2
		case c == ':' && i+1 < n && isIdentStart(sql[i+1]):
			j := i + 1
			for j < n && isIdentChar(sql[j]) && sql[j] != '$' {
				j++
			}
			out = append(out, placeholder{name: sql[i+1 : j], start: i, end: j})
			i = j
		case isIdentChar(c):
			// Skip whole words, so that the $ inside an identifier like a$b is not a quote.
			for i < n && isIdentChar(sql[i]) {
				i++
			}
		default:
			i++
		}
	}
	return out, nil
}

// skipQuoted returns the offset just past the quoted text starting at sql[i].
func skipQuoted(sql string, i int, q byte, backslash bool) (int, error) {
	for j := i + 1; j < len(sql); j++ {
		switch sql[j] {
		case '\\':
			if backslash {
				j++
			}
		case q:
			if j+1 < len(sql) && sql[j+1] == q {
				j++
				continue
			}
			return j + 1, nil
		}
	}
	if q == '"' {
		return 0, fmt.Errorf("unterminated quoted identifier at offset %d", i)
	}
	return 0, fmt.Errorf("unterminated string at offset %d", i)
}

func isIdentStart(c byte) bool {
	return c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c >= 0x80
}

func isIdentChar(c byte) bool {
	return isIdentStart(c) || (c >= '0' && c <= '9') || c == '$'
}

// bindPlaceholders returns sql with each placeholder replaced by bind(name).
func bindPlaceholders(sql string, phs []placeholder, bind func(name string) string) string {
	var b strings.Builder
	last := 0
	for _, ph := range phs {
		b.WriteString(sql[last:ph.start])
		b.WriteString(bind(ph.name))
		last = ph.end
	}
	b.WriteString(sql[last:])
	return b.String()
}
