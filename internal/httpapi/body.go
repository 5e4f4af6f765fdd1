package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/gin-gonic/gin"
)

// DefaultBodyReadTimeout is the default of Config.BodyReadTimeout.
const DefaultBodyReadTimeout = 10 * time.Second

// bodyReadKey marks a request whose body limitBody read to its end.
const bodyReadKey = "tocsin.body_read"

// guardConnection runs first on every request. It bounds how long a request's body may
// take to arrive (Config.BodyReadTimeout): a client that announces a body and never sends
// it, authenticated or not, is cut off instead of holding a connection and a goroutine.
// The deadline is set only on requests that announce a body and lifted once limitBody has
// read it: while a handler runs, net/http's read of the connection is how it notices the
// client leave, and a deadline there would cancel slow but legitimate requests. It also
// sets X-Content-Type-Options: nosniff on every response, and Connection: close while
// draining.
func (s *Server) guardConnection(c *gin.Context) {
	c.Header("X-Content-Type-Options", "nosniff")
	if s.draining() {
		c.Header("Connection", "close") // see Shutdown: close after this answer, never under a request
	}
	if c.Request.ContentLength != 0 && c.Request.Body != nil && c.Request.Body != http.NoBody {
		if err := http.NewResponseController(c.Writer).SetReadDeadline(time.Now().Add(s.cfg.BodyReadTimeout)); err != nil {
			s.logger.DebugContext(c.Request.Context(), "cannot set a read deadline", slog.Any("error", err))
		}
	}
	c.Next()
}

// liftReadDeadline removes the body's read deadline for a request that holds its
// connection (a long poll, a stream) after it was authenticated and admitted.
func (s endpoints) liftReadDeadline(ctx context.Context) {
	gc, ok := ctx.(*gin.Context)
	if !ok {
		return
	}
	if err := http.NewResponseController(gc.Writer).SetReadDeadline(time.Time{}); err != nil {
		s.logger.DebugContext(ctx, "cannot lift the read deadline", slog.Any("error", err))
	}
}

// bodyUnread reports whether c's request announced a body that nobody read to its end:
// answering it without closing the connection would make net/http wait for that body.
func bodyUnread(c *gin.Context) bool {
	if c.Request.ContentLength == 0 || c.Request.Body == nil || c.Request.Body == http.NoBody {
		return false
	}
	return !c.GetBool(bodyReadKey)
}

// limitBody reads the request body up to Config.MaxMessageBytes, answering 413 beyond,
// before the validator or a handler sees it. A body must be one JSON value in valid UTF-8,
// with nothing after it, and no string in it may hold NUL or a lone surrogate (which
// PostgreSQL cannot store): 400 otherwise.
func (s *Server) limitBody(c *gin.Context) {
	if c.Request.Body == nil || c.Request.Body == http.NoBody {
		c.Next()
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(c.Writer, c.Request.Body, s.cfg.MaxMessageBytes))
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		s.writeProblem(c, fmt.Errorf("%w: more than %d bytes", errTooLarge, s.cfg.MaxMessageBytes))
		return
	case isTimeout(err):
		s.writeProblem(c, &requestError{fmt.Errorf("the body did not arrive within %s", s.cfg.BodyReadTimeout)})
		return
	case err != nil:
		s.writeProblem(c, &requestError{fmt.Errorf("reading the body: %w", err)})
		return
	}
	c.Set(bodyReadKey, true)
	if err := http.NewResponseController(c.Writer).SetReadDeadline(time.Time{}); err != nil {
		s.logger.DebugContext(c.Request.Context(), "cannot lift the read deadline", slog.Any("error", err))
	}
	if len(body) > 0 {
		if err := CheckJSONBody(body); err != nil {
			s.writeProblem(c, &requestError{err})
			return
		}
	}
	c.Request.Body = io.NopCloser(bytes.NewReader(body))
	c.Next()
}

// CheckJSONBody returns an error unless b is exactly one JSON value (surrounding white
// space aside) in valid UTF-8 whose strings hold neither NUL (\u0000) nor a lone UTF-16
// surrogate escape.
func CheckJSONBody(b []byte) error {
	if !utf8.Valid(b) {
		return errors.New("the body is not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	var v json.RawMessage
	if err := dec.Decode(&v); err != nil {
		return fmt.Errorf("the body is not JSON: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("the body holds data after its JSON value")
	}
	return checkEscapes(v)
}

// checkEscapes scans the strings of the valid JSON b for \u escapes PostgreSQL refuses.
func checkEscapes(b []byte) error {
	inString := false
	for i := 0; i < len(b); i++ {
		if !inString {
			inString = b[i] == '"'
			continue
		}
		switch b[i] {
		case '"':
			inString = false
		case '\\':
			i++
			if b[i] != 'u' {
				continue
			}
			r := hex4(b[i+1 : i+5])
			i += 4
			switch {
			case r == 0:
				return errors.New(`the body holds a NUL character (\u0000)`)
			case r >= 0xD800 && r < 0xDC00:
				if i+7 <= len(b) && b[i+1] == '\\' && b[i+2] == 'u' {
					if low := hex4(b[i+3 : i+7]); low >= 0xDC00 && low < 0xE000 {
						i += 6
						continue
					}
				}
				return errors.New("the body holds a lone UTF-16 surrogate")
			case r >= 0xDC00 && r < 0xE000:
				return errors.New("the body holds a lone UTF-16 surrogate")
			}
		}
	}
	return nil
}

func hex4(b []byte) rune {
	n, err := strconv.ParseUint(string(b), 16, 32)
	if err != nil {
		return -1 // cannot happen in valid JSON
	}
	return rune(n)
}

// checkText refuses a header or parameter value PostgreSQL cannot store as text.
func checkText(name, v string) error {
	if !utf8.ValidString(v) {
		return &requestError{fmt.Errorf("%s is not valid UTF-8", name)}
	}
	for _, r := range v {
		if r == 0 {
			return &requestError{fmt.Errorf("%s holds a NUL character", name)}
		}
	}
	return nil
}
