package httpapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"syscall"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/gin-gonic/gin"

	"github.com/tocsin/tocsin/api"
	"github.com/tocsin/tocsin/internal/auth"
	"github.com/tocsin/tocsin/internal/feed"
	"github.com/tocsin/tocsin/internal/publish"
)

const problemTypeBase = "https://tocsin.dev/problems/"

// retryAfterSeconds is the Retry-After of a 503: clients may come back at once, to any node.
const retryAfterSeconds = "1"

// retryAfterStreamsSeconds is the Retry-After of a 429: a stream or long poll of the same
// recipient must end first, which takes a while.
const retryAfterStreamsSeconds = "10"

var (
	// errUnavailable marks errors answered with 503 service-unavailable and Retry-After.
	errUnavailable = errors.New("service unavailable")
	// errNotFound is the error of a path the API does not serve.
	errNotFound = errors.New("no such resource")
	// errTokenMissing is a request without a bearer token (no error code in the challenge).
	errTokenMissing = fmt.Errorf("%w: no bearer token in the Authorization header", auth.ErrTokenInvalid)
)

// requestError is a fault in the request itself (a parameter, a body); its message is shown
// to the client as the problem's detail.
type requestError struct{ err error }

func (e *requestError) Error() string { return e.err.Error() }
func (e *requestError) Unwrap() error { return e.err }

// writeProblem answers err as an RFC 9457 problem and aborts the gin chain. It is the one
// place where errors become HTTP statuses. Server errors are logged; their detail never
// reaches the client. Nothing is written when the response has already started.
func (s *Server) writeProblem(c *gin.Context, err error) {
	p, level := problemFor(err)
	attrs := []any{
		slog.String("method", c.Request.Method),
		slog.String("path", c.Request.URL.Path), // never the query: it may hold a token
		slog.Int("status", p.Status),
		slog.String("problem", p.Type),
		slog.Any("error", err),
	}
	s.logger.Log(c.Request.Context(), level, "request failed", attrs...)

	c.Abort()
	if c.Writer.Written() {
		return
	}
	h := c.Writer.Header()
	if bodyUnread(c) {
		// net/http would otherwise read the unread body before answering, for as long
		// as the client takes to send it.
		h.Set("Connection", "close")
	}
	h.Set("Content-Type", "application/problem+json")
	h.Set("Cache-Control", "no-store")
	switch p.Status {
	case http.StatusUnauthorized:
		challenge := `Bearer realm="tocsin"`
		if !errors.Is(err, errTokenMissing) {
			challenge += `, error="invalid_token"`
		}
		h.Set("WWW-Authenticate", challenge)
	case http.StatusServiceUnavailable:
		h.Set("Retry-After", retryAfterSeconds)
	case http.StatusTooManyRequests:
		h.Set("Retry-After", retryAfterStreamsSeconds)
	}
	c.JSON(p.Status, p)
}

// problemFor maps err to its problem and the level at which to log it.
func problemFor(err error) (api.Problem, slog.Level) {
	var reqErr *requestError
	switch {
	case errors.Is(err, auth.ErrTokenInvalid):
		return newProblem(http.StatusUnauthorized, "token-invalid", "Invalid token", err.Error()), slog.LevelDebug
	case errors.Is(err, feed.ErrCursorMalformed):
		return newProblem(http.StatusBadRequest, "cursor-malformed", "Malformed cursor",
			"after is not a cursor this service issued; send a cursor exactly as received, or now"), slog.LevelDebug
	case errors.Is(err, feed.ErrCursorExpired):
		return newProblem(http.StatusGone, "cursor-expired", "Cursor expired",
			"events after this cursor are no longer retained or the feed was reset; refetch and restart with after=now"), slog.LevelDebug
	case errors.Is(err, errTooManyStreams):
		return newProblem(http.StatusTooManyRequests, "too-many-streams", "Too many streams",
			"this recipient holds as many streams and long polls on this node as allowed; close one or retry later"), slog.LevelDebug
	case errors.Is(err, errForbidden):
		return newProblem(http.StatusForbidden, "forbidden", "Forbidden", err.Error()), slog.LevelDebug
	case errors.Is(err, errTooLarge):
		return newProblem(http.StatusRequestEntityTooLarge, "payload-too-large", "Payload too large", err.Error()), slog.LevelDebug
	case errors.Is(err, publish.ErrIdempotencyMismatch):
		return newProblem(http.StatusUnprocessableEntity, "idempotency-mismatch", "Idempotency key reused",
			"this Idempotency-Key was used for another request; use a new key"), slog.LevelDebug
	case errors.As(err, &reqErr):
		return newProblem(http.StatusBadRequest, "invalid-request", "Invalid request", reqErr.Error()), slog.LevelDebug
	case errors.Is(err, errNotFound):
		return newProblem(http.StatusNotFound, "not-found", "Not found", "this resource does not exist"), slog.LevelDebug
	case errors.Is(err, context.Canceled):
		// The client went away, or the server is shutting down; the answer is a formality.
		return unavailable(), slog.LevelDebug
	case errors.Is(err, errUnavailable), errors.Is(err, context.DeadlineExceeded), isTimeout(err), databaseUnavailable(err):
		return unavailable(), slog.LevelWarn
	case unstorableText(err):
		return newProblem(http.StatusBadRequest, "invalid-request", "Invalid request",
			"the request holds text the database cannot store (NUL or invalid UTF-8)"), slog.LevelDebug
	default:
		return newProblem(http.StatusInternalServerError, "internal", "Internal error",
			"the server failed to answer; the error was logged"), slog.LevelError
	}
}

func unavailable() api.Problem {
	return newProblem(http.StatusServiceUnavailable, "service-unavailable", "Service unavailable",
		"the server cannot answer now; retry after the Retry-After delay")
}

func newProblem(status int, slug, title, detail string) api.Problem {
	return api.Problem{Type: problemTypeBase + slug, Title: title, Status: status, Detail: detail}
}

// isTimeout reports a timeout by behaviour (net.Error and the like), such as a pool that
// could not hand out a connection in time.
func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}

// databaseUnavailable reports an error of a database that is down, restarting or refusing
// connections: the request may succeed later, so it is a 503, not a 500.
func databaseUnavailable(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case pgErr.Code == pgerrcode.CannotConnectNow, pgErr.Code == pgerrcode.AdminShutdown,
			pgErr.Code == pgerrcode.CrashShutdown, pgErr.Code == pgerrcode.TooManyConnections,
			pgerrcode.IsConnectionException(pgErr.Code):
			return true
		}
		return false
	}
	var connectErr *pgconn.ConnectError
	return errors.As(err, &connectErr) || pgconn.SafeToRetry(err) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, io.ErrUnexpectedEOF)
}

// unstorableText reports PostgreSQL refusing a value's characters (a NUL in text, bytes
// that are not UTF-8): input no check above caught, still the client's fault.
func unstorableText(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) &&
		(pgErr.Code == pgerrcode.CharacterNotInRepertoire || pgErr.Code == pgerrcode.UntranslatableCharacter)
}
