package capture

import (
	"encoding/json"
	"testing"
)

// FuzzDecodeValue: whatever text PostgreSQL's output function wrote for a column, the
// decoder renders it as valid JSON, for every kind of type (arrays of each kind included),
// and never panics.
func FuzzDecodeValue(f *testing.F) {
	for _, s := range []string{"t", "f", "12", "-0.5e10", "NaN", "Infinity", "0012", "2026-11-30 06:00:00+00",
		"2026-11-30 06:00:00", "infinity", `{"a":[1,2]}`, `{1,2,NULL,"x\"y"}`, `[0:1]={1,2}`, `{{1,2},{3,4}}`,
		`{"{\"a\":1}",NULL}`, "{", "}", `{"\\`, "\x00", "\xff\xfe"} {
		for kind := range byte(kindArray + 1) {
			f.Add(kind, s)
		}
	}
	f.Fuzz(func(t *testing.T, kind byte, s string) {
		k := jsonKind(kind % byte(kindArray+1))
		typ := &pgType{kind: k, name: "t"}
		if k == kindArray {
			typ.delim = ','
			typ.elem = &pgType{kind: jsonKind(kind / byte(kindArray+1) % byte(kindArray)), name: "e"}
		}
		out := toJSON(typ, s)
		if !json.Valid(out) {
			t.Fatalf("toJSON(kind %d, %q) = %q: not JSON", k, s, out)
		}
	})
}

// FuzzPgoutputMessage: no pgoutput message, however malformed, makes the consumer's parser
// panic. (The truncated Update seed made pglogrepl panic: parsePgoutput recovers.)
func FuzzPgoutputMessage(f *testing.F) {
	f.Add([]byte("B\x00\x00\x00\x00\x01\x02\x03\x04\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x03\xe8"))
	f.Add([]byte("R\x00\x00@\x00public\x00comment\x00d\x00\x02\x01id\x00\x00\x00\x00\x14\xff\xff\xff\xff\x00body\x00\x00\x00\x00\x19\xff\xff\xff\xff"))
	f.Add([]byte("I\x00\x00@\x00N\x00\x02t\x00\x00\x00\x011t\x00\x00\x00\x02hi"))
	f.Add([]byte("U\x00\x00@\x00O\x00\x01n"))
	f.Add([]byte("C\x00"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		_, _ = parsePgoutput(data)
	})
}
