package routes

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// namePattern is what a route name must match: it becomes part of a trigger's and a
// function's name, so it stays short and needs no quoting thought.
var namePattern = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,47}$`)

// ParseFile reads and parses the routes file at path.
func ParseFile(path string) (*File, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading routes file: %w", err)
	}
	return Parse(path, data)
}

// Parse parses a routes file. filename is only used in error messages. Every problem found
// is reported, each as an *Error naming the file, line, route and field:
//
//	routes.yaml:12: route "comment-on-my-portfolio": recipients.column: must be a string
func Parse(filename string, data []byte) (*File, error) {
	p := &parser{file: filename}
	f := &File{Name: filename}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, p.yamlError(data, err)
	}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return nil, &Error{File: filename, Line: 1, Field: "routes", Err: errors.New("is required (the file is empty)")}
	}
	top := doc.Content[0]
	if top.Kind != yaml.MappingNode {
		return nil, &Error{File: filename, Line: top.Line, Err: errors.New("want a mapping with a routes list")}
	}
	var list *yaml.Node
	p.fields(top, "", "", func(key string, v *yaml.Node) bool {
		if key != "routes" {
			return false
		}
		list = v
		return true
	})
	switch {
	case list == nil:
		p.add(top.Line, "", "routes", "is required")
	case list.Kind == yaml.ScalarNode && list.Tag == "!!null":
		// "routes:" with nothing under it: no routes, like "routes: []".
	case list.Kind != yaml.SequenceNode:
		p.add(list.Line, "", "routes", "must be a list")
	default:
		seen := map[string]int{}
		for i, n := range list.Content {
			r, ok := p.route(n, i+1)
			if !ok {
				continue
			}
			if first, dup := seen[r.Name]; dup {
				p.add(r.line("name"), r.Name, "name", "duplicates the route on line %d", first)
				continue
			}
			seen[r.Name] = r.Line
			f.Routes = append(f.Routes, r)
		}
	}
	if len(p.errs) > 0 {
		return nil, errors.Join(p.errs...)
	}
	return f, nil
}

type parser struct {
	file string
	errs []error
}

func (p *parser) add(line int, route, field, format string, args ...any) {
	p.errs = append(p.errs, &Error{File: p.file, Line: line, Route: route, Field: field, Err: fmt.Errorf(format, args...)})
}

// yamlLine matches the line yaml.v3 puts in its syntax errors.
var yamlLine = regexp.MustCompile(`^yaml: line (\d+): `)

// yamlError reports a YAML syntax error at the line at fault. yaml.v3 often names the line
// before the enclosing block or flow collection (line 1 for a bad indentation anywhere in
// the routes list), so the line at fault is found as the last line of the shortest prefix
// of the file that fails with the same message.
func (p *parser) yamlError(data []byte, err error) error {
	msg, at := splitYAMLError(err)
	lines := bytes.SplitAfter(data, []byte("\n"))
	for k := 1; k <= len(lines); k++ {
		var doc yaml.Node
		perr := yaml.Unmarshal(bytes.Join(lines[:k], nil), &doc)
		if perr == nil {
			continue
		}
		if m, _ := splitYAMLError(perr); m == msg {
			at = k
			break
		}
	}
	if at == 0 {
		at = 1
	}
	return &Error{File: p.file, Line: at, Err: fmt.Errorf("invalid YAML: %s", msg)}
}

// splitYAMLError returns a yaml.v3 syntax error's message and line (0 when it names none).
func splitYAMLError(err error) (msg string, line int) {
	msg = err.Error()
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		line, _ = strconv.Atoi(m[1])
		return msg[len(m[0]):], line
	}
	return strings.TrimPrefix(msg, "yaml: "), 0
}

// fields calls fn for each key of mapping n; fn returns false for a key it does not know.
// Unknown and repeated keys are reported.
func (p *parser) fields(n *yaml.Node, route, prefix string, fn func(key string, v *yaml.Node) bool) {
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		name := prefix + k.Value
		switch {
		case k.Kind != yaml.ScalarNode:
			p.add(k.Line, route, prefix, "keys must be strings")
		case seen[k.Value]:
			p.add(k.Line, route, name, "appears twice")
		case !fn(k.Value, v):
			p.add(k.Line, route, name, "unknown field")
		}
		seen[k.Value] = true
	}
}

// route parses the idx-th (1-based) route. ok is false when it has errors.
func (p *parser) route(n *yaml.Node, idx int) (r Route, ok bool) {
	before := len(p.errs)
	r = Route{Line: n.Line, lines: map[string]int{}}
	label := fmt.Sprintf("#%d", idx)
	if n.Kind != yaml.MappingNode {
		p.add(n.Line, label, "", "must be a mapping")
		return r, false
	}
	nodes := map[string]*yaml.Node{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if k := n.Content[i]; k.Value == "name" && n.Content[i+1].Kind == yaml.ScalarNode && n.Content[i+1].Value != "" {
			label = n.Content[i+1].Value
		}
	}
	p.fields(n, label, "", func(key string, v *yaml.Node) bool {
		switch key {
		case "name", "table", "on", "recipients", "topic", "kind", "payload", "columns",
			"when_changed", "group", "capture", "snapshot":
			nodes[key] = v
			r.lines[key] = v.Line
			return true
		}
		return false
	})
	str := func(key string) string { return p.scalar(nodes[key], label, key) }

	r.Name = str("name")
	switch {
	case r.Name == "":
		p.add(r.line("name"), label, "name", "is required")
	case !namePattern.MatchString(r.Name):
		p.add(r.line("name"), label, "name", "must match %s, got %q", namePattern, r.Name)
	}

	if t := str("table"); t == "" {
		p.add(r.line("table"), label, "table", "is required")
	} else if r.Table, ok = parseTable(t); !ok {
		p.add(r.line("table"), label, "table", "must be table or schema.table, got %q", t)
	}

	r.On = []Op{OpInsert, OpUpdate, OpDelete}
	if nodes["on"] != nil {
		ops := p.list(&r, nodes["on"], label, "on")
		if ops != nil && len(ops) == 0 {
			p.add(r.line("on"), label, "on", "must list at least one of insert, update, delete")
		}
		set := map[Op]bool{}
		for i, o := range ops {
			switch op := Op(o); op {
			case OpInsert, OpUpdate, OpDelete:
				set[op] = true
			default:
				p.add(r.line(fmt.Sprintf("on[%d]", i)), label, "on", "unknown operation %q (want insert, update or delete)", o)
			}
		}
		r.On = r.On[:0]
		for _, op := range []Op{OpInsert, OpUpdate, OpDelete} {
			if set[op] {
				r.On = append(r.On, op)
			}
		}
	}

	p.recipients(&r, nodes["recipients"], label)

	if r.Topic = str("topic"); r.Topic == "" {
		p.add(r.line("topic"), label, "topic", "is required")
	}

	r.Kind = KindChange
	if s := str("kind"); s != "" {
		if r.Kind = Kind(s); r.Kind != KindChange && r.Kind != KindNotification {
			p.add(r.line("kind"), label, "kind", "must be notification or change, got %q", s)
		}
	}

	r.Payload = PayloadKeys
	if s := str("payload"); s != "" {
		if r.Payload = Payload(s); r.Payload != PayloadNone && r.Payload != PayloadKeys && r.Payload != PayloadFull {
			p.add(r.line("payload"), label, "payload", "must be none, keys or full, got %q", s)
		}
	}

	if nodes["columns"] != nil {
		r.Columns = p.list(&r, nodes["columns"], label, "columns")
	}
	switch {
	case r.Payload == PayloadFull && len(r.Columns) == 0:
		p.add(r.line("columns"), label, "columns", "must list at least one column when payload is full")
	case r.Payload != PayloadFull && nodes["columns"] != nil:
		p.add(r.line("columns"), label, "columns", "is only allowed when payload is full (payload is %q)", r.Payload)
	}

	if nodes["when_changed"] != nil {
		r.WhenChanged = p.list(&r, nodes["when_changed"], label, "when_changed")
		switch {
		case len(r.WhenChanged) == 0:
			p.add(r.line("when_changed"), label, "when_changed", "must list at least one column")
		case !r.has(OpUpdate):
			p.add(r.line("when_changed"), label, "when_changed", "has no effect: the route does not fire on update")
		}
	}

	if nodes["group"] != nil {
		r.Group = p.group(&r, nodes["group"], label)
	}

	r.Capture = CaptureTrigger
	switch s := str("capture"); Capture(s) {
	case "", CaptureTrigger:
	case CaptureReplication, CaptureDebezium:
		r.Capture = Capture(s)
	default:
		p.add(r.line("capture"), label, "capture", "must be trigger, replication or debezium, got %q", s)
	}

	switch s := str("snapshot"); s {
	case "", "false":
	case "true":
		r.Snapshot = true
		switch {
		case r.Capture != CaptureDebezium:
			p.add(r.line("snapshot"), label, "snapshot", "only applies to capture: debezium (snapshot reads are Debezium's)")
		case !r.has(OpInsert):
			p.add(r.line("snapshot"), label, "snapshot", "delivers snapshot reads as inserts: add insert to on")
		}
	default:
		p.add(r.line("snapshot"), label, "snapshot", "must be true or false, got %q", s)
	}
	return r, len(p.errs) == before
}

// SetDefaultCapture sets the capture mode of the routes that do not name one (the
// configuration's TOCSIN_CAPTURE_DEFAULT). It is a no-op for an empty c.
func (f *File) SetDefaultCapture(c Capture) {
	if c == "" {
		return
	}
	for i := range f.Routes {
		if _, written := f.Routes[i].lines["capture"]; !written {
			f.Routes[i].Capture = c
		}
	}
}

func parseTable(s string) (Table, bool) {
	schema, name, found := strings.Cut(s, ".")
	if !found {
		schema, name = "public", s
	}
	if schema == "" || name == "" || strings.Contains(name, ".") {
		return Table{}, false
	}
	return Table{Schema: schema, Name: name}, true
}

// scalar returns the string value of n ("" when n is nil or null).
func (p *parser) scalar(n *yaml.Node, route, field string) string {
	if n == nil || (n.Kind == yaml.ScalarNode && n.Tag == "!!null") {
		return ""
	}
	if n.Kind != yaml.ScalarNode {
		p.add(n.Line, route, field, "must be a string")
		return ""
	}
	return n.Value
}

// list returns the non-empty, distinct strings of sequence n and records their lines as
// field[i]. It returns nil, after reporting, when n is not a list.
func (p *parser) list(r *Route, n *yaml.Node, route, field string) []string {
	if n.Kind != yaml.SequenceNode {
		p.add(n.Line, route, field, "must be a list")
		return nil
	}
	out := make([]string, 0, len(n.Content))
	seen := map[string]bool{}
	for i, item := range n.Content {
		s := p.scalar(item, route, field)
		switch {
		case item.Kind != yaml.ScalarNode:
		case s == "":
			p.add(item.Line, route, field, "entry %d is empty", i+1)
		case seen[s]:
			p.add(item.Line, route, field, "lists %q twice", s)
		default:
			seen[s] = true
			r.lines[fmt.Sprintf("%s[%d]", field, len(out))] = item.Line
			out = append(out, s)
		}
	}
	return out
}

func (p *parser) recipients(r *Route, n *yaml.Node, route string) {
	if n == nil {
		p.add(r.Line, route, "recipients", "is required (one of column, sql, static)")
		return
	}
	if n.Kind != yaml.MappingNode {
		p.add(n.Line, route, "recipients", "must be a mapping with one of column, sql, static")
		return
	}
	set := 0
	p.fields(n, route, "recipients.", func(key string, v *yaml.Node) bool {
		field := "recipients." + key
		r.lines[field] = v.Line
		switch key {
		case "column":
			r.Recipients.Column = p.scalar(v, route, field)
			if r.Recipients.Column == "" && v.Kind == yaml.ScalarNode {
				p.add(v.Line, route, field, "must name a column")
			}
		case "sql":
			r.Recipients.SQL = strings.TrimRight(strings.TrimSpace(p.scalar(v, route, field)), "; \t\r\n")
			switch _, err := scanPlaceholders(r.Recipients.SQL); {
			case r.Recipients.SQL == "" && v.Kind == yaml.ScalarNode:
				p.add(v.Line, route, field, "must be a query")
			case err != nil:
				p.add(v.Line, route, field, "%v", err)
			}
		case "static":
			if r.Recipients.Static = p.list(r, v, route, field); r.Recipients.Static != nil && len(r.Recipients.Static) == 0 {
				p.add(v.Line, route, field, "must list at least one recipient")
			}
		default:
			return false
		}
		set++
		return true
	})
	if set != 1 {
		p.add(n.Line, route, "recipients", "must set exactly one of column, sql, static (got %d)", set)
	}
}

func (p *parser) group(r *Route, n *yaml.Node, route string) *Group {
	if n.Kind != yaml.MappingNode {
		p.add(n.Line, route, "group", "must be a mapping with window, by and max")
		return nil
	}
	g := &Group{Max: GroupMaxDefault}
	var window bool
	p.fields(n, route, "group.", func(key string, v *yaml.Node) bool {
		field := "group." + key
		r.lines[field] = v.Line
		switch key {
		case "window":
			window = true
			s := p.scalar(v, route, field)
			d, err := time.ParseDuration(s)
			if err != nil || d < GroupWindowMin || d > GroupWindowMax {
				p.add(v.Line, route, field, "must be a duration from %s to %s (like 30s or 5m), got %q", GroupWindowMin, GroupWindowMax, s)
			}
			g.Window = d
		case "by":
			g.By = p.list(r, v, route, field)
		case "max":
			s := p.scalar(v, route, field)
			m, err := strconv.Atoi(s)
			if err != nil || m < 1 || m > GroupMaxLimit {
				p.add(v.Line, route, field, "must be an integer from 1 to %d, got %q", GroupMaxLimit, s)
			}
			g.Max = m
		default:
			return false
		}
		return true
	})
	if !window {
		p.add(n.Line, route, "group.window", "is required")
	}
	return g
}
