package httpapi

import (
	"context"
	"errors"
	"fmt"

	"github.com/tocsin/tocsin/api"
	"github.com/tocsin/tocsin/internal/feed"
	"github.com/tocsin/tocsin/internal/inbox"
)

// Inbox reads and changes the caller's inbox state (an *inbox.Store).
type Inbox interface {
	// List: entries newest first, older than before; next is the following page's before.
	// Errors: inbox.ErrInvalid, feed.ErrCursorMalformed, feed.ErrCursorExpired, others.
	List(ctx context.Context, recipient string, filter inbox.Filter, before string, limit int) ([]inbox.Entry, string, error)
	// Counts returns the recipient's exact counts.
	Counts(ctx context.Context, recipient string) (inbox.Counts, error)
	// Mark applies action to the selection; idempotent.
	Mark(ctx context.Context, recipient string, action inbox.Action, sel inbox.Selection) (int, inbox.Counts, error)
}

const defaultInboxLimit = 50

var errNoInbox = fmt.Errorf("%w: the inbox is not served by this node", errNotFound)

// GetInbox serves GET /v1/inbox.
func (s endpoints) GetInbox(ctx context.Context, req api.GetInboxRequestObject) (api.GetInboxResponseObject, error) {
	sub, err := s.inboxCaller(ctx)
	if err != nil {
		return nil, err
	}
	filter := inbox.Filter(valueOr(req.Params.State, api.All))
	entries, next, err := s.deps.Inbox.List(requestContext(ctx), sub, filter,
		valueOr(req.Params.Before, ""), int(valueOr(req.Params.Limit, defaultInboxLimit)))
	if err != nil {
		return nil, inboxError(err)
	}
	page := api.GetInbox200JSONResponse{Entries: make([]api.InboxEntry, len(entries))}
	if next != "" {
		page.Next = &next
	}
	for i, e := range entries {
		ev := apiEvents([]feed.Event{e.Event})[0]
		page.Entries[i] = api.InboxEntry{Id: ev.Id, Topic: ev.Topic, Kind: ev.Kind, Op: ev.Op, Table: ev.Table,
			Key: ev.Key, Data: ev.Data, Old: ev.Old, Changed: ev.Changed, Group: ev.Group, Replaces: ev.Replaces,
			CreatedAt: ev.CreatedAt, SeenAt: e.SeenAt, ReadAt: e.ReadAt, ArchivedAt: e.ArchivedAt}
	}
	return page, nil
}

// GetInboxCounts serves GET /v1/inbox/counts.
func (s endpoints) GetInboxCounts(ctx context.Context, _ api.GetInboxCountsRequestObject) (api.GetInboxCountsResponseObject, error) {
	sub, err := s.inboxCaller(ctx)
	if err != nil {
		return nil, err
	}
	c, err := s.deps.Inbox.Counts(requestContext(ctx), sub)
	if err != nil {
		return nil, err
	}
	return api.GetInboxCounts200JSONResponse{Unread: c.Unread, Unseen: c.Unseen}, nil
}

// MarkInboxSeen serves POST /v1/inbox/seen.
func (s endpoints) MarkInboxSeen(ctx context.Context, req api.MarkInboxSeenRequestObject) (api.MarkInboxSeenResponseObject, error) {
	r, err := s.mark(ctx, inbox.ActionSeen, req.Body)
	if err != nil {
		return nil, err
	}
	return api.MarkInboxSeen200JSONResponse{InboxMarkedJSONResponse: r}, nil
}

// MarkInboxRead serves POST /v1/inbox/read.
func (s endpoints) MarkInboxRead(ctx context.Context, req api.MarkInboxReadRequestObject) (api.MarkInboxReadResponseObject, error) {
	r, err := s.mark(ctx, inbox.ActionRead, req.Body)
	if err != nil {
		return nil, err
	}
	return api.MarkInboxRead200JSONResponse{InboxMarkedJSONResponse: r}, nil
}

// MarkInboxArchived serves POST /v1/inbox/archive.
func (s endpoints) MarkInboxArchived(ctx context.Context, req api.MarkInboxArchivedRequestObject) (api.MarkInboxArchivedResponseObject, error) {
	r, err := s.mark(ctx, inbox.ActionArchive, req.Body)
	if err != nil {
		return nil, err
	}
	return api.MarkInboxArchived200JSONResponse{InboxMarkedJSONResponse: r}, nil
}

func (s endpoints) mark(ctx context.Context, action inbox.Action, body *api.InboxSelection) (api.InboxMarkedJSONResponse, error) {
	sub, err := s.inboxCaller(ctx)
	if err != nil {
		return api.InboxMarkedJSONResponse{}, err
	}
	if body == nil {
		return api.InboxMarkedJSONResponse{}, &requestError{errors.New("a body with ids or up_to is required")}
	}
	// The validator admitted exactly one branch of the oneOf; the other decodes empty.
	ids, err := body.AsInboxSelectIds()
	if err != nil {
		return api.InboxMarkedJSONResponse{}, &requestError{err}
	}
	upTo, err := body.AsInboxSelectUpTo()
	if err != nil {
		return api.InboxMarkedJSONResponse{}, &requestError{err}
	}
	sel := inbox.Selection{IDs: ids.Ids, UpTo: upTo.UpTo}
	n, c, err := s.deps.Inbox.Mark(requestContext(ctx), sub, action, sel)
	if err != nil {
		return api.InboxMarkedJSONResponse{}, inboxError(err)
	}
	return api.InboxMarkedJSONResponse{Changed: n, Counts: api.InboxCounts{Unread: c.Unread, Unseen: c.Unseen}}, nil
}

// inboxCaller returns the caller's recipient, or an error when the inbox is not served.
func (s endpoints) inboxCaller(ctx context.Context) (string, error) {
	if s.deps.Inbox == nil {
		return "", errNoInbox
	}
	claims, ok := claimsFrom(ctx)
	if !ok {
		return "", errors.New("inbox request reached its handler unauthenticated")
	}
	return claims.Subject, nil
}

// inboxError makes an invalid selection a 400; cursor errors map as for the feed.
func inboxError(err error) error {
	if errors.Is(err, inbox.ErrInvalid) {
		return &requestError{err}
	}
	return err
}
