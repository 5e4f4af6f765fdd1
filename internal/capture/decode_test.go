package capture

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestToJSON(t *testing.T) {
	t.Parallel()
	num := &pgType{kind: kindNumber}
	str := &pgType{kind: kindString}
	tstz := &pgType{kind: kindTimestamptz}
	for _, tc := range []struct {
		typ  *pgType
		in   string
		want string
	}{
		{num, "12", "12"},
		{num, "-1.50", "-1.50"},
		{num, "1e+100", "1e+100"},
		{num, "NaN", `"NaN"`},
		{num, "Infinity", `"Infinity"`},
		{&pgType{kind: kindBool}, "t", "true"},
		{&pgType{kind: kindBool}, "f", "false"},
		{str, `a "q" <b>`, `"a \"q\" \u003cb\u003e"`},
		{tstz, "2024-01-02 03:04:05.5+00", `"2024-01-02T03:04:05.5+00:00"`},
		{tstz, "2024-01-02 03:04:05+05:30", `"2024-01-02T03:04:05+05:30"`},
		{tstz, "infinity", `"infinity"`},
		{&pgType{kind: kindTimestamp}, "2024-01-02 03:04:05", `"2024-01-02T03:04:05"`},
		{&pgType{kind: kindJSON}, `{"a": [1, null]}`, `{"a": [1, null]}`},
		{&pgType{kind: kindArray, elem: num, delim: ','}, "{{1,2},{NULL,4}}", "[[1,2],[null,4]]"},
		{&pgType{kind: kindArray, elem: str, delim: ','}, `{"a b","c\"d",NULL,"NULL",e}`, `["a b","c\"d",null,"NULL","e"]`},
		{&pgType{kind: kindArray, elem: num, delim: ','}, "[0:1]={7,8}", "[7,8]"},
		{&pgType{kind: kindArray, elem: num, delim: ','}, "{}", "[]"},
	} {
		require.Equal(t, tc.want, string(toJSON(tc.typ, tc.in)), tc.in)
	}
}
