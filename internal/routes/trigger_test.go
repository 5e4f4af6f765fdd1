package routes_test

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestTriggerColumnRecipientKeys(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.apply(t, `
routes:
  - name: comment-keys
    table: public.comment
    recipients: { column: owner_id }
    topic: comment
    kind: notification
`)
	base := entry{Recipient: "alice", Route: "comment-keys", Topic: "comment", Kind: "notification", TableName: "public.comment",
		Key: map[string]any{"id": float64(1)}}
	b.exec(t, `INSERT INTO comment (id, portfolio_id, owner_id, body) VALUES (1, 1, 'alice', 'hi')`)
	want := base
	want.Op = "insert"
	require.Equal(t, []entry{want}, b.drain(t))

	b.exec(t, `UPDATE comment SET body = 'hello' WHERE id = 1`)
	want.Op = "update"
	require.Equal(t, []entry{want}, b.drain(t), "no watched columns: changed is NULL")

	// The row changes hands: both owners hear of it.
	b.exec(t, `UPDATE comment SET owner_id = 'bob' WHERE id = 1`)
	bob := want
	bob.Recipient = "bob"
	require.Equal(t, []entry{want, bob}, b.drain(t))

	// No recipient, no entry; an empty recipient is no recipient.
	b.exec(t, `INSERT INTO comment (id, owner_id) VALUES (2, NULL), (3, '')`)
	require.Empty(t, b.drain(t))
	b.exec(t, `UPDATE comment SET owner_id = NULL WHERE id = 1`)
	require.Equal(t, []entry{bob}, b.drain(t), "the old owner hears that the row left")

	b.exec(t, `UPDATE comment SET owner_id = 'carol' WHERE id = 1`)
	b.exec(t, `DELETE FROM comment WHERE id = 1`)
	got := b.drain(t)
	require.Len(t, got, 2)
	require.Equal(t, "update", got[0].Op)
	require.Equal(t, "delete", got[1].Op)
	require.Equal(t, "carol", got[1].Recipient)
	require.Equal(t, map[string]any{"id": float64(1)}, got[1].Key, "delete keys come from OLD")
	require.Nil(t, got[1].Data)
	require.Nil(t, got[1].Old)
	require.Nil(t, got[1].Changed)
}

func TestTriggerPayloadNone(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.apply(t, `
routes:
  - name: r
    table: comment
    on: [insert]
    recipients: { column: owner_id }
    topic: comment
    payload: none
`)
	b.exec(t, `INSERT INTO comment (id, owner_id, body) VALUES (1, 'alice', 'hi')`)
	b.exec(t, `UPDATE comment SET body = 'x'`)
	b.exec(t, `DELETE FROM comment`)
	require.Equal(t, []entry{{Recipient: "alice", Route: "r", Topic: "comment", Kind: "change", Op: "insert",
		TableName: "public.comment", Key: map[string]any{"id": float64(1)}}}, b.drain(t), "only the route's operations fire")
}

func TestTriggerPayloadFull(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.apply(t, `
routes:
  - name: r
    table: comment
    recipients: { column: owner_id }
    topic: comment
    payload: full
    columns: [id, portfolio_id, body, tags]
    when_changed: [status, body]
    group: { window: 30s, by: [portfolio_id, owner_id] }
`)
	b.exec(t, `INSERT INTO comment (id, portfolio_id, owner_id, body, status, tags) VALUES (1, 1, 'alice', 'hi', 'draft', '{a,b}')`)
	got := b.drain(t)
	require.Len(t, got, 1)
	require.Equal(t, "insert", got[0].Op)
	require.Equal(t, map[string]any{"id": float64(1), "portfolio_id": float64(1), "body": "hi", "tags": []any{"a", "b"}}, got[0].Data)
	require.Nil(t, got[0].Old)
	require.Nil(t, got[0].Changed)
	require.Equal(t, ptr(`[1, "alice"]`), got[0].GroupKey)

	// Neither status nor body changed: no entry.
	b.exec(t, `UPDATE comment SET portfolio_id = 2, tags = NULL WHERE id = 1`)
	require.Empty(t, b.drain(t))

	// status is watched but not allow-listed: it is in changed, not in old or data.
	b.exec(t, `UPDATE comment SET status = 'published', portfolio_id = 1 WHERE id = 1`)
	got = b.drain(t)
	require.Len(t, got, 1)
	require.Equal(t, "update", got[0].Op)
	require.Equal(t, []string{"portfolio_id", "status"}, got[0].Changed)
	require.Equal(t, map[string]any{"portfolio_id": float64(2)}, got[0].Old)
	require.Equal(t, map[string]any{"id": float64(1), "portfolio_id": float64(1), "body": "hi", "tags": nil}, got[0].Data)
	require.Equal(t, ptr(`[1, "alice"]`), got[0].GroupKey)

	b.exec(t, `UPDATE comment SET body = NULL WHERE id = 1`)
	got = b.drain(t)
	require.Len(t, got, 1)
	require.Equal(t, []string{"body"}, got[0].Changed, "NULL is a change")
	require.Equal(t, map[string]any{"body": "hi"}, got[0].Old)

	b.exec(t, `DELETE FROM comment WHERE id = 1`)
	got = b.drain(t)
	require.Len(t, got, 1)
	require.Equal(t, "delete", got[0].Op)
	require.Nil(t, got[0].Data)
	require.Nil(t, got[0].Changed)
	require.Equal(t, map[string]any{"id": float64(1), "portfolio_id": float64(1), "body": nil, "tags": nil}, got[0].Old)
	require.Equal(t, ptr(`[1, "alice"]`), got[0].GroupKey)
}

func TestTriggerWhenChangedOnly(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.apply(t, `
routes:
  - name: r
    table: comment
    on: [update]
    recipients: { column: owner_id }
    topic: comment
    when_changed: [status]
`)
	b.exec(t, `INSERT INTO comment (id, owner_id, status) VALUES (1, 'alice', 'draft')`)
	b.exec(t, `UPDATE comment SET body = 'x'`)
	b.exec(t, `UPDATE comment SET status = 'draft'`)
	require.Empty(t, b.drain(t))
	b.exec(t, `UPDATE comment SET status = 'published'`)
	got := b.drain(t)
	require.Len(t, got, 1)
	require.Equal(t, []string{"status"}, got[0].Changed)
	require.Nil(t, got[0].Old, "payload keys carries no old values")
	require.Nil(t, got[0].Data)
}

func TestTriggerSQLRecipients(t *testing.T) {
	t.Parallel()
	b := setup(t)
	// The query has ::casts, a string and a quoted identifier holding ":x", a comment
	// with a placeholder-looking word, a dollar quote and a trailing comment: only
	// :portfolio_id (twice) is a placeholder.
	b.apply(t, `
routes:
  - name: members
    table: comment
    recipients:
      sql: |
        select m.user_id::text as ":owner_id"
        from portfolio_member m -- not :here
        where m.portfolio_id = :portfolio_id::bigint
          and m.role <> ':x' /* nor :there */
          and m.role <> $q$ :y $q$
          and :portfolio_id is not null
          and m.user_id <> E'\' :z'
          and m.user_id is distinct from :owner_id -- the author knows already
    topic: comment
    group: { window: 1m, by: [] }
`)
	b.exec(t, `INSERT INTO comment (id, portfolio_id, owner_id) VALUES (1, 1, 'alice')`)
	got := b.drain(t)
	require.Len(t, got, 2)
	require.Equal(t, "carol", got[0].Recipient)
	require.Equal(t, "dave", got[1].Recipient)
	require.Equal(t, map[string]any{"id": float64(1)}, got[0].Key)
	require.Equal(t, ptr("[]"), got[0].GroupKey)

	b.exec(t, `DELETE FROM portfolio_member WHERE user_id = 'dave'`)
	b.exec(t, `UPDATE comment SET owner_id = 'carol'`)
	got = b.drain(t)
	require.Len(t, got, 1)
	require.Equal(t, "alice", got[0].Recipient, "update binds NEW")

	b.exec(t, `UPDATE comment SET portfolio_id = 2`)
	require.Equal(t, "bob", b.drain(t)[0].Recipient)

	b.exec(t, `DELETE FROM comment`)
	got = b.drain(t)
	require.Len(t, got, 1)
	require.Equal(t, "bob", got[0].Recipient, "delete binds OLD")
	require.Equal(t, "delete", got[0].Op)

	// A portfolio without members: no entry, no error.
	b.exec(t, `INSERT INTO comment (id, portfolio_id) VALUES (2, 99)`)
	require.Empty(t, b.drain(t))
}

// The writer's search_path does not change what a recipient query reads.
func TestTriggerSQLRecipientsSearchPath(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.apply(t, `
routes:
  - name: members
    table: comment
    on: [insert]
    recipients: { sql: "select user_id from portfolio_member where portfolio_id = :portfolio_id" }
    topic: comment
`)
	tx, err := b.pool.Begin(b.ctx)
	require.NoError(t, err)
	defer tx.Rollback(b.ctx)
	_, err = tx.Exec(b.ctx, `SET LOCAL search_path = tocsin; INSERT INTO public.comment (id, portfolio_id) VALUES (1, 2)`)
	require.NoError(t, err)
	var n int
	require.NoError(t, tx.QueryRow(b.ctx, `SELECT count(*) FROM tocsin.outbox WHERE recipient = 'bob'`).Scan(&n))
	require.Equal(t, 1, n)
}

func TestTriggerStaticRecipients(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.apply(t, `
routes:
  - name: audit
    table: portfolio
    recipients: { static: ["service:authz", "service:audit", "it's \\ odd"] }
    topic: portfolio
`)
	b.exec(t, `UPDATE portfolio SET owner_id = 'carol' WHERE id = 1`)
	got := b.drain(t)
	require.Len(t, got, 3)
	require.Equal(t, []string{"it's \\ odd", "service:audit", "service:authz"},
		[]string{got[0].Recipient, got[1].Recipient, got[2].Recipient})
	for _, e := range got {
		require.Equal(t, "update", e.Op)
		require.Equal(t, "public.portfolio", e.TableName)
		require.Equal(t, map[string]any{"id": float64(1)}, e.Key)
	}
}

// Identifiers are quoted everywhere: odd schema, table and column names work.
func TestTriggerQuotedIdentifiers(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.apply(t, `
routes:
  - name: odd
    table: 'Odd "Schema".:Weird Table$'
    recipients: { column: 'Own:er' }
    topic: "it's"
    payload: full
    columns: ['Key Col', 'Own:er']
`)
	b.exec(t, `INSERT INTO "Odd ""Schema""".":Weird Table$" VALUES (7, 'alice')`)
	got := b.drain(t)
	require.Equal(t, []entry{{Recipient: "alice", Route: "odd", Topic: "it's", Kind: "change", Op: "insert",
		TableName: `Odd "Schema".:Weird Table$`, Key: map[string]any{"Key Col": float64(7)},
		Data: map[string]any{"Key Col": float64(7), "Own:er": "alice"}}}, got)
}

func TestTriggerCaptureSwitchedOff(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.apply(t, `
routes:
  - name: r
    table: comment
    recipients: { column: owner_id }
    topic: comment
`)
	b.exec(t, `UPDATE tocsin.setting SET value = 'false' WHERE key = 'capture'`)
	b.exec(t, `INSERT INTO comment (id, owner_id) VALUES (1, 'alice')`)
	b.exec(t, `UPDATE comment SET owner_id = 'bob'`)
	b.exec(t, `DELETE FROM comment`)
	require.Empty(t, b.drain(t))

	b.exec(t, `UPDATE tocsin.setting SET value = 'true' WHERE key = 'capture'`)
	b.exec(t, `INSERT INTO comment (id, owner_id) VALUES (1, 'alice')`)
	require.Len(t, b.drain(t), 1)
}

// The outbox row is part of the application's transaction.
func TestTriggerRollbackLeavesNoRow(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.apply(t, `
routes:
  - name: r
    table: comment
    recipients: { column: owner_id }
    topic: comment
`)
	tx, err := b.pool.Begin(b.ctx)
	require.NoError(t, err)
	_, err = tx.Exec(b.ctx, `INSERT INTO comment (id, owner_id) VALUES (1, 'alice')`)
	require.NoError(t, err)
	var n int
	require.NoError(t, tx.QueryRow(b.ctx, `SELECT count(*) FROM tocsin.outbox`).Scan(&n))
	require.Equal(t, 1, n)
	require.NoError(t, tx.Rollback(b.ctx))
	require.Empty(t, b.drain(t))
}
