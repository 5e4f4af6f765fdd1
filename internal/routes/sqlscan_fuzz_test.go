package routes

import "testing"

// FuzzScanPlaceholders: every placeholder found is a ":name" at its offsets, in order and
// without overlap, and nothing panics.
func FuzzScanPlaceholders(f *testing.F) {
	for _, s := range []string{
		"select user_id from portfolio_member where portfolio_id = :portfolio_id",
		"select :a::text, ':b', E'\\':c', \"d:e\", $$ :f $$, $t$:g$t$ -- :h\n /* :i /* :j */ */ :k",
		"select $1", "select ':", "select E'\\", "/* unterminated", "$tag$ never closed", "::", ":", ":a:b",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, sql string) {
		ps, err := scanPlaceholders(sql)
		if err != nil {
			return
		}
		last := 0
		for _, p := range ps {
			if p.start < last || p.end <= p.start || p.end > len(sql) || sql[p.start] != ':' || sql[p.start+1:p.end] != p.name || p.name == "" {
				t.Fatalf("scanPlaceholders(%q): bad placeholder %+v", sql, p)
			}
			last = p.end
		}
	})
}
