package debezium

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"math/big"
	"strconv"
	"strings"
	"time"

	"github.com/tocsin/tocsin/internal/routes"
)

// Unavailable is Debezium's default unavailable.value.placeholder: what it sends for an
// unchanged TOASTed column it could not read (REPLICA IDENTITY DEFAULT). Such a column is
// "unchanged, unknown": it is never delivered as a value.
const Unavailable = "__debezium_unavailable_value"

// unavailableBase64 is the placeholder as a bytea column carries it.
var unavailableBase64 = base64.StdEncoding.EncodeToString([]byte(Unavailable))

// field is the Kafka Connect schema of one value (schemas.enable=true).
type field struct {
	Field      string            `json:"field"`
	Type       string            `json:"type"`
	Name       string            `json:"name"`
	Optional   bool              `json:"optional"`
	Parameters map[string]string `json:"parameters"`
	Fields     []field           `json:"fields"`
	Items      *field            `json:"items"`
}

// convert turns one column value of a Debezium event into the routes.Value the trigger
// mode would have produced for it: JSON as to_jsonb renders it, Text for change detection
// and recipient queries, Type for their casts. fs is the column's schema, nil without
// schemas.enable. ok is false for the unavailable-value placeholder.
func convert(raw json.RawMessage, fs *field) (v routes.Value, ok bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		v = routes.Value{Null: true, JSON: json.RawMessage("null")}
		if fs != nil {
			v.Type = pgType(fs)
		}
		return v, true
	}
	if isUnavailable(raw) {
		return routes.Value{}, false
	}
	var js json.RawMessage
	var typ string
	if fs != nil {
		js, typ = convertTyped(raw, fs)
	} else {
		js, typ = convertUntyped(raw)
	}
	return routes.Value{Text: textOf(js), JSON: js, Type: typ}, true
}

// isUnavailable reports the placeholder in the forms Debezium writes it: a string, a bytea
// (base64) and an array holding only the placeholder.
func isUnavailable(raw json.RawMessage) bool {
	switch raw[0] {
	case '"':
		var s string
		return json.Unmarshal(raw, &s) == nil && (s == Unavailable || s == unavailableBase64)
	case '[':
		var a []string
		return json.Unmarshal(raw, &a) == nil && len(a) == 1 && a[0] == Unavailable
	}
	return false
}

// textOf is a value's text for comparisons and recipient queries: a JSON string's
// contents, any other JSON as written.
func textOf(js json.RawMessage) string {
	if len(js) > 0 && js[0] == '"' {
		var s string
		if json.Unmarshal(js, &s) == nil {
			return s
		}
	}
	return string(js)
}

// pgType is the PostgreSQL type a recipient query casts a column's parameter to. ""
// (text) when the schema does not say.
func pgType(fs *field) string {
	switch fs.Name {
	case "io.debezium.time.Date", "org.apache.kafka.connect.data.Date":
		return "date"
	case "io.debezium.time.Timestamp", "io.debezium.time.MicroTimestamp", "io.debezium.time.NanoTimestamp",
		"org.apache.kafka.connect.data.Timestamp":
		return "timestamp"
	case "io.debezium.time.ZonedTimestamp":
		return "timestamptz"
	case "io.debezium.time.Time", "io.debezium.time.MicroTime", "io.debezium.time.NanoTime",
		"org.apache.kafka.connect.data.Time":
		return "time"
	case "org.apache.kafka.connect.data.Decimal", "io.debezium.data.VariableScaleDecimal":
		return "numeric"
	case "io.debezium.data.Json":
		return "jsonb"
	case "io.debezium.data.Uuid":
		return "uuid"
	}
	switch fs.Type {
	case "int8", "int16":
		return "smallint"
	case "int32":
		return "integer"
	case "int64":
		return "bigint"
	case "float32":
		return "real"
	case "float64":
		return "double precision"
	case "boolean":
		return "boolean"
	case "bytes":
		return "bytea"
	case "array":
		if fs.Items != nil {
			if e := pgType(fs.Items); e != "" {
				return e + "[]"
			}
		}
		return "text[]"
	}
	return ""
}

// convertTyped converts a value whose Connect schema is known.
func convertTyped(raw json.RawMessage, fs *field) (json.RawMessage, string) {
	typ := pgType(fs)
	var n json.Number
	number := func() bool { return json.Unmarshal(raw, &n) == nil }
	str := func() (string, bool) {
		var s string
		return s, json.Unmarshal(raw, &s) == nil
	}
	switch fs.Name {
	case "io.debezium.time.Date", "org.apache.kafka.connect.data.Date":
		if number() {
			if d, err := n.Int64(); err == nil {
				return jsonString(time.Unix(d*86400, 0).UTC().Format("2006-01-02")), typ
			}
		}
	case "io.debezium.time.Timestamp", "org.apache.kafka.connect.data.Timestamp",
		"io.debezium.time.MicroTimestamp", "io.debezium.time.NanoTimestamp":
		if number() {
			if t, ok := epoch(n, fs.Name); ok {
				return jsonString(t.Format("2006-01-02T15:04:05.999999")), typ
			}
		}
	case "io.debezium.time.ZonedTimestamp":
		if s, ok := str(); ok {
			if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
				return jsonString(t.UTC().Format("2006-01-02T15:04:05.999999") + "+00:00"), typ
			}
		}
	case "io.debezium.time.Time", "io.debezium.time.MicroTime", "io.debezium.time.NanoTime",
		"org.apache.kafka.connect.data.Time":
		if number() {
			if t, ok := epoch(n, fs.Name); ok {
				return jsonString(t.Format("15:04:05.999999")), typ
			}
		}
	case "org.apache.kafka.connect.data.Decimal":
		if s, ok := str(); ok {
			scale, err := strconv.Atoi(fs.Parameters["scale"])
			if d, ok2 := decimal(s, scale); ok2 && err == nil {
				return json.RawMessage(d), typ
			}
		}
	case "io.debezium.data.VariableScaleDecimal":
		if d, ok := variableScale(raw); ok {
			return json.RawMessage(d), typ
		}
	case "io.debezium.data.Json":
		if s, ok := str(); ok && json.Valid([]byte(s)) {
			var b bytes.Buffer
			if json.Compact(&b, []byte(s)) == nil {
				return json.RawMessage(b.String()), typ
			}
		}
	}
	switch fs.Type {
	case "bytes":
		if s, ok := str(); ok {
			if b, err := base64.StdEncoding.DecodeString(s); err == nil {
				return jsonString(`\x` + hex.EncodeToString(b)), typ
			}
		}
	case "array":
		var items []json.RawMessage
		if fs.Items != nil && json.Unmarshal(raw, &items) == nil {
			var b strings.Builder
			b.WriteByte('[')
			for i, it := range items {
				if i > 0 {
					b.WriteByte(',')
				}
				v, _ := convert(it, fs.Items)
				b.Write(valueJSON(v))
			}
			b.WriteByte(']')
			return json.RawMessage(b.String()), typ
		}
	}
	return compact(raw), typ
}

// convertUntyped converts a value without a schema: JSON types are all there is. Numbers
// and booleans stay as they are; strings stay strings (a timestamp with time zone, a
// decimal in string mode, json and jsonb arrive as strings); a {scale, value} object is a
// variable-scale numeric.
func convertUntyped(raw json.RawMessage) (json.RawMessage, string) {
	switch raw[0] {
	case '"':
		return compact(raw), ""
	case 't', 'f':
		return compact(raw), "boolean"
	case '{':
		if d, ok := variableScale(raw); ok {
			return json.RawMessage(d), "numeric"
		}
		return compact(raw), ""
	case '[':
		var items []json.RawMessage
		if json.Unmarshal(raw, &items) == nil {
			var b strings.Builder
			b.WriteByte('[')
			for i, it := range items {
				if i > 0 {
					b.WriteByte(',')
				}
				v, _ := convert(it, nil)
				b.Write(valueJSON(v))
			}
			b.WriteByte(']')
			return json.RawMessage(b.String()), ""
		}
		return compact(raw), ""
	}
	s := string(compact(raw))
	if strings.ContainsAny(s, ".eE") {
		return json.RawMessage(s), "numeric"
	}
	return json.RawMessage(s), "bigint"
}

func valueJSON(v routes.Value) []byte {
	if v.Null || len(v.JSON) == 0 {
		return []byte("null")
	}
	return v.JSON
}

// epoch reads a Debezium timestamp: milliseconds, or micro/nanoseconds by its name.
func epoch(n json.Number, name string) (time.Time, bool) {
	i, err := n.Int64()
	if err != nil {
		return time.Time{}, false
	}
	switch {
	case strings.Contains(name, "Micro"):
		return time.UnixMicro(i).UTC(), true
	case strings.Contains(name, "Nano"):
		return time.Unix(0, i).UTC(), true
	}
	return time.UnixMilli(i).UTC(), true
}

// decimal renders Connect's Decimal (base64 of the unscaled two's-complement big-endian
// integer) with its scale, as PostgreSQL writes a numeric: 12.50 keeps its zero.
func decimal(b64 string, scale int) (string, bool) {
	b, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(b) == 0 {
		return "", false
	}
	n := new(big.Int).SetBytes(b)
	if b[0]&0x80 != 0 { // negative: two's complement
		n.Sub(n, new(big.Int).Lsh(big.NewInt(1), uint(8*len(b))))
	}
	return scaled(n, scale), true
}

func scaled(n *big.Int, scale int) string {
	neg := n.Sign() < 0
	digits := new(big.Int).Abs(n).String()
	if scale < 0 {
		digits += strings.Repeat("0", -scale)
		scale = 0
	}
	if scale > 0 {
		if len(digits) <= scale {
			digits = strings.Repeat("0", scale-len(digits)+1) + digits
		}
		digits = digits[:len(digits)-scale] + "." + digits[len(digits)-scale:]
	}
	if neg {
		return "-" + digits
	}
	return digits
}

// variableScale decodes io.debezium.data.VariableScaleDecimal: {"scale": 2, "value": "BOI="}.
func variableScale(raw json.RawMessage) (string, bool) {
	var v struct {
		Scale *int    `json:"scale"`
		Value *string `json:"value"`
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if dec.Decode(&v) != nil || v.Scale == nil || v.Value == nil {
		return "", false
	}
	return decimal(*v.Value, *v.Scale)
}

func jsonString(s string) json.RawMessage {
	b, _ := json.Marshal(s)
	return b
}

func compact(raw json.RawMessage) json.RawMessage {
	var b bytes.Buffer
	if json.Compact(&b, raw) != nil {
		return raw
	}
	return b.Bytes()
}
