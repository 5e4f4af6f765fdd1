package routes

import (
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/tocsin/tocsin/internal/outbox"
)

// The generated SQL of one route. The trigger function is plain, static plpgsql: no
// dynamic SQL, no to_jsonb of the whole row, no NOTIFY, no EXCEPTION block (that would
// open a subtransaction for every row). Every value is bound by plpgsql; only identifiers
// (quoted), the route's own constants (as literals) and the ids of its operations in
// tocsin.route_op are spliced into the text.

// functionName returns the qualified name of route's trigger function.
func functionName(route string) string { return "tocsin." + ident("route:"+route) }

// triggerName returns the name of route's trigger.
func triggerName(route string) string { return "tocsin:" + route }

// maxJSONPairs keeps jsonb_build_object under PostgreSQL's 100-argument limit.
const maxJSONPairs = 50

// functionBody returns the plpgsql body of r's trigger function; pk is the table's
// primary key and ops the tocsin.route_op id of each of r's operations.
func functionBody(r *Route, pk []string, ops map[Op]int32) string {
	var b strings.Builder
	w := func(indent int, format string, args ...any) {
		b.WriteString(strings.Repeat("    ", indent))
		fmt.Fprintf(&b, format, args...)
		b.WriteByte('\n')
	}
	watched := r.watched()
	b.WriteByte('\n')
	if r.has(OpUpdate) && len(watched) > 0 {
		w(0, "DECLARE")
		w(1, "v_changed text[];")
		if r.Payload == PayloadFull {
			w(1, "v_old jsonb;")
		}
	}
	w(0, "BEGIN")
	// The capture switch: a catalog-cache lookup of the marker relation (migration 0006),
	// written out rather than through tocsin.capture_enabled(). Here it is a simple
	// expression whose plan plpgsql keeps; in the trigger's WHEN it was decoded and prepared
	// again for every statement (see createTriggerSQL).
	w(1, "IF to_regclass('tocsin.capture_off') IS NOT NULL THEN")
	w(2, "RETURN NULL;")
	w(1, "END IF;")
	for i, op := range r.On {
		in := 1
		if len(r.On) > 1 {
			in = 2
			switch {
			case i == 0:
				w(1, "IF TG_OP = %s THEN", literal(strings.ToUpper(string(op))))
			case i == len(r.On)-1:
				w(1, "ELSE")
			default:
				w(1, "ELSIF TG_OP = %s THEN", literal(strings.ToUpper(string(op))))
			}
		}
		if op == OpUpdate {
			if len(r.WhenChanged) > 0 {
				var same []string
				for _, c := range r.WhenChanged {
					same = append(same, fmt.Sprintf("NEW.%s IS NOT DISTINCT FROM OLD.%[1]s", ident(c)))
				}
				w(in, "IF %s THEN", strings.Join(same, " AND "))
				w(in+1, "RETURN NULL;")
				w(in, "END IF;")
			}
			if len(watched) > 0 {
				w(in, "v_changed := '{}';")
				if r.Payload == PayloadFull {
					w(in, "v_old := '{}';")
				}
				for _, c := range watched {
					w(in, "IF NEW.%s IS DISTINCT FROM OLD.%[1]s THEN", ident(c))
					w(in+1, "v_changed := array_append(v_changed, %s);", literal(c))
					if r.Payload == PayloadFull && slices.Contains(r.Columns, c) {
						w(in+1, "v_old := v_old || jsonb_build_object(%s, OLD.%s);", literal(c), ident(c))
					}
					w(in, "END IF;")
				}
			}
		}
		for _, line := range strings.Split(outboxInsert(r, pk, op, ops[op]), "\n") {
			w(in, "%s", line)
		}
	}
	if len(r.On) > 1 {
		w(1, "END IF;")
	}
	w(1, "RETURN NULL;")
	w(0, "END;")
	return b.String()
}

// outboxInsert returns the statement that writes op's outbox rows. The route's constants
// (name, topic, kind, operation, table) are not written: routeOp, the id of their
// tocsin.route_op row, stands for them and the sequencer fills them in.
func outboxInsert(r *Route, pk []string, op Op, routeOp int32) string {
	row := "NEW"
	if op == OpDelete {
		row = "OLD"
	}
	data, old, changed, group := "NULL", "NULL", "NULL", "NULL"
	if r.Payload == PayloadFull {
		switch op {
		case OpInsert:
			data = jsonObject(row, r.Columns)
		case OpUpdate:
			data, old = jsonObject(row, r.Columns), "v_old"
		case OpDelete:
			old = jsonObject(row, r.Columns)
		}
	}
	if op == OpUpdate && len(r.watched()) > 0 {
		changed = "v_changed"
	}
	if r.Group != nil {
		group = jsonArray(row, r.Group.By) + "::text"
	}
	// route, topic, kind, op and table_name, in Columns' order.
	const constants = "NULL, NULL, NULL, NULL, NULL"
	if c := r.Recipients.Column; c != "" && op != OpUpdate {
		// One recipient: a plain INSERT … VALUES behind an IF is the cheapest statement the
		// executor can run (no VALUES scan, no filter node). NULL <> '' is not true, so a
		// NULL recipient writes nothing, as below.
		recipient := fmt.Sprintf("%s.%s::text", row, ident(c))
		return fmt.Sprintf(`IF %s <> '' THEN
    INSERT INTO tocsin.outbox (%s)
    VALUES (%s, %s, %s, %s, %s, %s, %s, %d);
END IF;`,
			recipient, outbox.Columns, recipient, constants, jsonObject(row, pk), data, old, changed, group, routeOp)
	}
	return fmt.Sprintf(`INSERT INTO tocsin.outbox (%s)
SELECT v.r, %s,
       %s,
       %s,
       %s,
       %s,
       %s,
       %d
FROM %s AS v(r)
WHERE v.r <> '';`,
		outbox.Columns, constants,
		jsonObject(row, pk),
		data, old, changed, group, routeOp,
		recipientSource(r, row, op))
}

// recipientSource returns a FROM item with one text column of recipients, possibly NULL
// or empty (the caller filters those out).
func recipientSource(r *Route, row string, op Op) string {
	rc := r.Recipients
	switch {
	case rc.Column != "":
		c := ident(rc.Column)
		if op == OpUpdate {
			// A row that changes hands concerns both owners.
			return fmt.Sprintf("(VALUES (NEW.%s::text), (CASE WHEN OLD.%[1]s IS DISTINCT FROM NEW.%[1]s THEN OLD.%[1]s::text END))", c)
		}
		return fmt.Sprintf("(VALUES (%s.%s::text))", row, c)
	case rc.SQL != "":
		phs, _ := scanPlaceholders(rc.SQL) // Parse already refused a query it cannot scan
		sql := bindPlaceholders(rc.SQL, phs, func(name string) string { return row + "." + ident(name) })
		// The newlines keep a trailing -- comment from swallowing the closing parenthesis.
		return "(SELECT DISTINCT q.r::text FROM (\n" + sql + "\n) AS q(r) WHERE q.r IS NOT NULL)"
	default:
		vals := make([]string, len(rc.Static))
		for i, s := range rc.Static {
			vals[i] = "(" + literal(s) + ")"
		}
		return "(VALUES " + strings.Join(vals, ", ") + ")"
	}
}

// jsonObject returns a jsonb object of row's columns cols.
func jsonObject(row string, cols []string) string {
	var parts []string
	for start := 0; start < len(cols); start += maxJSONPairs {
		var args []string
		for _, c := range cols[start:min(start+maxJSONPairs, len(cols))] {
			args = append(args, literal(c), row+"."+ident(c))
		}
		parts = append(parts, "jsonb_build_object("+strings.Join(args, ", ")+")")
	}
	if len(parts) == 0 {
		return "'{}'::jsonb"
	}
	return strings.Join(parts, " || ")
}

// jsonArray returns a jsonb array of row's columns cols.
func jsonArray(row string, cols []string) string {
	var parts []string
	for start := 0; start < len(cols); start += 2 * maxJSONPairs {
		var args []string
		for _, c := range cols[start:min(start+2*maxJSONPairs, len(cols))] {
			args = append(args, row+"."+ident(c))
		}
		parts = append(parts, "jsonb_build_array("+strings.Join(args, ", ")+")")
	}
	if len(parts) == 0 {
		return "'[]'::jsonb"
	}
	return "(" + strings.Join(parts, " || ") + ")"
}

// createFunctionSQL returns the statement that (re)creates r's trigger function around
// body.
func createFunctionSQL(r *Route, body string) string {
	tag := "$tocsin$"
	for i := 1; strings.Contains(body, tag); i++ {
		tag = fmt.Sprintf("$tocsin%d$", i)
	}
	set := ""
	if r.Recipients.SQL != "" {
		// The recipient query names tables as its author saw them when applying; the
		// writing session's search_path must not change what it reads (or break the write).
		set = "SET search_path FROM CURRENT\n"
	}
	return fmt.Sprintf("CREATE OR REPLACE FUNCTION %s() RETURNS trigger\nLANGUAGE plpgsql\n%sAS %s%s%s",
		functionName(r.Name), set, tag, body, tag)
}

// createTriggerSQL returns the statement that attaches r's trigger to its table.
func createTriggerSQL(r *Route) string {
	ops := make([]string, len(r.On))
	for i, op := range r.On {
		ops[i] = strings.ToUpper(string(op))
	}
	// The capture switch is checked in the function (functionBody), not in WHEN: PostgreSQL
	// decodes and prepares a trigger's WHEN again for every statement. Measured on one
	// backend, 50,000 single-row inserts: the WHEN test cost about 2 µs per insert with
	// capture on (the whole route trigger about 12 µs), and moving it into the function made
	// capture off no dearer (about 3 µs per insert either way: the call and its queued event
	// against WHEN).
	when := ""
	if len(r.On) == 1 && r.On[0] == OpUpdate && len(r.WhenChanged) > 0 {
		// Skip the call (and the queued after-trigger event) for updates that cannot fire.
		var changed []string
		for _, c := range r.WhenChanged {
			changed = append(changed, fmt.Sprintf("OLD.%s IS DISTINCT FROM NEW.%[1]s", ident(c)))
		}
		when = "\nWHEN (" + strings.Join(changed, " OR ") + ")"
	}
	return fmt.Sprintf("CREATE TRIGGER %s AFTER %s ON %s\nFOR EACH ROW%s EXECUTE FUNCTION %s()",
		ident(triggerName(r.Name)), strings.Join(ops, " OR "), r.Table.sanitize(), when, functionName(r.Name))
}

// watched returns columns ∪ when_changed, in that order.
func (r *Route) watched() []string {
	out := append([]string(nil), r.Columns...)
	for _, c := range r.WhenChanged {
		if !slices.Contains(out, c) {
			out = append(out, c)
		}
	}
	return out
}

func (t Table) sanitize() string { return pgx.Identifier{t.Schema, t.Name}.Sanitize() }

func ident(s string) string { return pgx.Identifier{s}.Sanitize() }

// literal quotes s as a SQL string constant, as quote_literal does.
func literal(s string) string {
	q := "'" + strings.ReplaceAll(s, "'", "''") + "'"
	if strings.Contains(s, `\`) {
		q = "E" + strings.ReplaceAll(q, `\`, `\\`)
	}
	return q
}
