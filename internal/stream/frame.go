package stream

import (
	"bytes"
	"strconv"
	"strings"
	"time"
)

// The wire format (https://html.spec.whatwg.org/multipage/server-sent-events.html). Every
// frame ends with a blank line. A field value never holds CR or LF: ids and event names are
// stripped of them and data is split into one data: line per line, so no value can inject
// a field or end a frame early. Event data is compact JSON, which never holds a raw newline
// (encoding/json escapes them inside strings), so in practice it is always one line.

// appendEvent appends one event frame: "id: <id>\nevent: <name>\ndata: <data>\n\n".
// An empty id or name leaves its line out.
func appendEvent(b []byte, id, name string, data []byte) []byte {
	if id != "" {
		b = appendField(b, "id", oneLine(id))
	}
	if name != "" {
		b = appendField(b, "event", oneLine(name))
	}
	for {
		line, rest, more := cutLine(data)
		b = appendField(b, "data", string(line))
		if !more {
			break
		}
		data = rest
	}
	return append(b, '\n')
}

// appendOpening appends the frame that opens every stream: the reconnection delay the
// client should use and, when known, the cursor it starts from, so that a client that
// receives no event before losing the connection still resumes at the right place. It
// carries no data, so EventSource dispatches nothing but records the id.
func appendOpening(b []byte, retry time.Duration, cursor string) []byte {
	b = appendField(b, "retry", strconv.FormatInt(retry.Milliseconds(), 10))
	if cursor != "" {
		b = appendField(b, "id", oneLine(cursor))
	}
	return append(b, '\n')
}

// appendHeartbeat appends a comment frame, which clients ignore and proxies see as traffic.
func appendHeartbeat(b []byte) []byte { return append(b, ": heartbeat\n\n"...) }

func appendField(b []byte, name, value string) []byte {
	b = append(b, name...)
	b = append(b, ": "...)
	b = append(b, value...)
	return append(b, '\n')
}

func oneLine(s string) string {
	if !strings.ContainsAny(s, "\r\n\x00") {
		return s
	}
	return strings.NewReplacer("\r", "", "\n", "", "\x00", "").Replace(s)
}

// cutLine splits data at its first line ending (CRLF, CR or LF).
func cutLine(data []byte) (line, rest []byte, found bool) {
	i := bytes.IndexAny(data, "\r\n")
	if i < 0 {
		return data, nil, false
	}
	if data[i] == '\r' && i+1 < len(data) && data[i+1] == '\n' {
		return data[:i], data[i+2:], true
	}
	return data[:i], data[i+1:], true
}
