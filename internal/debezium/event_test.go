package debezium_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tocsin/tocsin/internal/debezium"
)

// TestDecodeValues decodes one column at a time, with its Connect schema, the way
// Debezium's PostgreSQL connector encodes each type, and checks the JSON against what
// to_jsonb gives for the same value (in a UTC session).
func TestDecodeValues(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, schema, value, want, typ string
	}{
		{"bigint", `{"type":"int64"}`, `42`, `42`, "bigint"},
		{"integer", `{"type":"int32"}`, `-7`, `-7`, "integer"},
		{"boolean", `{"type":"boolean"}`, `true`, `true`, "boolean"},
		{"text", `{"type":"string"}`, `"a \"b\""`, `"a \"b\""`, ""},
		{"float8", `{"type":"float64"}`, `1.5`, `1.5`, "double precision"},
		{"numeric", `{"type":"bytes","name":"org.apache.kafka.connect.data.Decimal","parameters":{"scale":"2"}}`, `"BOI="`, `12.50`, "numeric"},
		{"numeric negative", `{"type":"bytes","name":"org.apache.kafka.connect.data.Decimal","parameters":{"scale":"3"}}`, `"+w=="`, `-0.005`, "numeric"},
		{"numeric big", `{"type":"bytes","name":"org.apache.kafka.connect.data.Decimal","parameters":{"scale":"0"}}`, `"Ah4Z4Mm6skAAAA=="`, `10000000000000000000000`, "numeric"},
		{"numeric variable scale", `{"type":"struct","name":"io.debezium.data.VariableScaleDecimal","fields":[{"type":"int32","field":"scale"},{"type":"bytes","field":"value"}]}`, `{"scale":1,"value":"AQ=="}`, `0.1`, "numeric"},
		{"date", `{"type":"int32","name":"io.debezium.time.Date"}`, `20419`, `"2025-11-27"`, "date"},
		{"date before 1970", `{"type":"int32","name":"io.debezium.time.Date"}`, `-1`, `"1969-12-31"`, "date"},
		{"timestamp(3)", `{"type":"int64","name":"io.debezium.time.Timestamp"}`, `1764216143512`, `"2025-11-27T04:02:23.512"`, "timestamp"},
		{"timestamp(6)", `{"type":"int64","name":"io.debezium.time.MicroTimestamp"}`, `1764216143000000`, `"2025-11-27T04:02:23"`, "timestamp"},
		{"timestamp nano", `{"type":"int64","name":"io.debezium.time.NanoTimestamp"}`, `1764216143000000100`, `"2025-11-27T04:02:23"`, "timestamp"},
		{"timestamp connect", `{"type":"int64","name":"org.apache.kafka.connect.data.Timestamp"}`, `1764216143100`, `"2025-11-27T04:02:23.1"`, "timestamp"},
		{"timestamptz", `{"type":"string","name":"io.debezium.time.ZonedTimestamp"}`, `"2025-11-27T06:02:23.512942+02:00"`, `"2025-11-27T04:02:23.512942+00:00"`, "timestamptz"},
		{"time", `{"type":"int64","name":"io.debezium.time.MicroTime"}`, `14543500000`, `"04:02:23.5"`, "time"},
		{"json", `{"type":"string","name":"io.debezium.data.Json"}`, `"{\"a\": [1, 2]}"`, `{"a":[1,2]}`, "jsonb"},
		{"uuid", `{"type":"string","name":"io.debezium.data.Uuid"}`, `"0b1d6e8e-1111-2222-3333-444455556666"`, `"0b1d6e8e-1111-2222-3333-444455556666"`, "uuid"},
		{"bytea", `{"type":"bytes"}`, `"AQL/"`, `"\\x0102ff"`, "bytea"},
		{"int array", `{"type":"array","items":{"type":"int32","optional":true}}`, `[1,null,3]`, `[1,null,3]`, "integer[]"},
		{"date array", `{"type":"array","items":{"type":"int32","name":"io.debezium.time.Date"}}`, `[0]`, `["1970-01-01"]`, "date[]"},
		{"null", `{"type":"string","optional":true}`, `null`, `null`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e, err := debezium.Decode([]byte(`{"id":1}`), []byte(`{"schema":{"type":"struct","fields":[
				{"type":"struct","field":"after","fields":[{"type":"int64","field":"id"},`+
				tt.schema[:len(tt.schema)-1]+`,"field":"v"}]},{"type":"string","field":"op"}]},
				"payload":{"op":"c","after":{"id":1,"v":`+tt.value+`},"source":{"schema":"public","table":"t","lsn":5,"sequence":"[null,\"5\"]"}}}`))
			require.NoError(t, err)
			v := e.After["v"]
			require.JSONEq(t, tt.want, string(v.JSON))
			require.Equal(t, tt.want, string(v.JSON), "as written")
			require.Equal(t, tt.typ, v.Type)
		})
	}
}

// TestDecodeUnavailable leaves Debezium's unavailable-value placeholder out of the row in
// each form it takes: text, bytea (base64) and an array.
func TestDecodeUnavailable(t *testing.T) {
	t.Parallel()
	e, err := debezium.Decode([]byte(`{"id":1}`), []byte(`{"op":"u","before":null,
		"after":{"id":1,"body":"__debezium_unavailable_value","blob":"X19kZWJleml1bV91bmF2YWlsYWJsZV92YWx1ZQ==",
		         "tags":["__debezium_unavailable_value"],"n":null},
		"source":{"schema":"public","table":"t","lsn":5,"sequence":"[\"3\",\"5\"]"}}`))
	require.NoError(t, err)
	require.Len(t, e.After, 2)
	require.Contains(t, e.After, "id")
	require.True(t, e.After["n"].Null)
	require.True(t, e.BeforeKeyOnly)
	require.Equal(t, debezium.Position{Commit: 3, LSN: 5}, e.Pos)
	require.Equal(t, []string{"id"}, e.KeyColumns)
}

// TestDecodeRefuses names what is not a change event.
func TestDecodeRefuses(t *testing.T) {
	t.Parallel()
	for value, reason := range map[string]string{
		`{`:                      debezium.ReasonNotJSON,
		`[1, 2]`:                 debezium.ReasonNotEnvelope,
		`{"op":"c"}`:             debezium.ReasonNotEnvelope,
		`{"op":"z","source":{}}`: debezium.ReasonNotEnvelope,
		`{"op":"c","source":{"schema":"public","table":"t"},"after":null}`:  debezium.ReasonNotEnvelope,
		`{"op":"d","source":{"schema":"public","table":"t"},"before":null}`: debezium.ReasonNotEnvelope,
		`{"op":"c","source":{"schema":"public","table":"t"},"after":[1]}`:   debezium.ReasonNotEnvelope,
	} {
		_, err := debezium.Decode([]byte(`{"id":1}`), []byte(value))
		var p *debezium.PoisonError
		require.ErrorAs(t, err, &p, value)
		require.Equal(t, reason, p.Reason, value)
	}
	for _, tomb := range []string{``, `null`, `{"schema":{"type":"struct"},"payload":null}`} {
		e, err := debezium.Decode([]byte(`{"id":1}`), []byte(tomb))
		require.NoError(t, err)
		require.Nil(t, e, "a tombstone")
	}
}
