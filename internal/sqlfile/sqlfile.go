// Package sqlfile reads the named SQL statements of a package's embedded .sql file.
//
// Tocsin's convention for runtime SQL: the statements a package runs live in that
// package's own .sql file(s), embedded with go:embed, one statement per block that starts
// with a name line:
//
//	-- name: feed_list_after
//	-- The entries of one recipient after a position, oldest first.
//	SELECT … FROM tocsin.feed WHERE recipient = $1 AND position > $2 ORDER BY position LIMIT $3;
//
// A package loads its file once into package-level variables (var feedListAfterSQL =
// queries.Get("feed_list_after")), so a missing or misspelt name fails at start-up, in
// every test of the package. Every loaded file is registered, and a test prepares each
// statement against a migrated database, so a statement that no longer matches the schema
// fails the tests, not a request.
//
// Not covered, by nature: SQL that Tocsin generates (route triggers, whose text depends on
// a routes file) or that users supply (recipient queries, the publish policy), and the
// schema itself (migrations/).
package sqlfile

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
)

// File is the named statements of one .sql file.
type File struct {
	name  string
	stmts map[string]string
	order []string
}

var (
	mu    sync.Mutex
	files []*File
)

var nameLine = regexp.MustCompile(`(?m)^--\s*name:\s*([a-z][a-z0-9_]*)\s*$`)

// Parse reads src, the text of the .sql file called name (for errors), and registers it.
// It panics when src holds no statement, a name twice, or text before the first name:
// these are programming errors, found by any test of the package that embeds src.
func Parse(name, src string) *File {
	f := &File{name: name, stmts: map[string]string{}}
	locs := nameLine.FindAllStringSubmatchIndex(src, -1)
	if len(locs) == 0 {
		panic(fmt.Sprintf("sqlfile: %s: no \"-- name:\" line", name))
	}
	if strings.TrimSpace(stripComments(src[:locs[0][0]])) != "" {
		panic(fmt.Sprintf("sqlfile: %s: SQL before the first \"-- name:\" line", name))
	}
	for i, l := range locs {
		end := len(src)
		if i+1 < len(locs) {
			end = locs[i+1][0]
		}
		n := src[l[2]:l[3]]
		body := strings.TrimSpace(src[l[1]:end])
		body = strings.TrimSpace(strings.TrimSuffix(body, ";"))
		// The comment lines that open a block document it in the file; the server does not
		// need them, and pg_stat_activity then shows the statement itself.
		for strings.HasPrefix(body, "--") {
			nl := strings.IndexByte(body, '\n')
			if nl < 0 {
				body = ""
				break
			}
			body = strings.TrimSpace(body[nl+1:])
		}
		if _, dup := f.stmts[n]; dup {
			panic(fmt.Sprintf("sqlfile: %s: statement %q twice", name, n))
		}
		if body == "" {
			panic(fmt.Sprintf("sqlfile: %s: statement %q is empty", name, n))
		}
		f.stmts[n] = body
		f.order = append(f.order, n)
	}
	mu.Lock()
	files = append(files, f)
	mu.Unlock()
	return f
}

// Get returns the statement called name. It panics when there is none.
func (f *File) Get(name string) string {
	s, ok := f.stmts[name]
	if !ok {
		panic(fmt.Sprintf("sqlfile: %s: no statement %q", f.name, name))
	}
	return s
}

// Name is the file's name as given to Parse.
func (f *File) Name() string { return f.name }

// Statements returns the file's statement names, in file order.
func (f *File) Statements() []string { return slices.Clone(f.order) }

// Registered returns every file parsed so far in this process (for the test that prepares
// every statement).
func Registered() []*File {
	mu.Lock()
	defer mu.Unlock()
	return slices.Clone(files)
}

func stripComments(s string) string {
	var b strings.Builder
	for _, line := range strings.Split(s, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "--") {
			b.WriteString(line)
			b.WriteByte('\n')
		}
	}
	return b.String()
}
