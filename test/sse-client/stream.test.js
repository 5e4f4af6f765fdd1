// A real EventSource client (eventsource@4.1.1, the browser's API on Node 20) against a
// Tocsin node started by internal/app's TestEventSourceClient, which passes:
//   TOCSIN_BASE    the node's base URL
//   TOCSIN_TOKEN   a bearer token for the recipient
//   TOCSIN_AFTER   the cursor before the published events
//   TOCSIN_EXPECT  how many events were published ({"n": 0..EXPECT-1}, in order)
import { test } from "node:test";
import assert from "node:assert/strict";
import { EventSource } from "eventsource";

const base = process.env.TOCSIN_BASE;
const token = process.env.TOCSIN_TOKEN;
const after = process.env.TOCSIN_AFTER;
const expect = Number(process.env.TOCSIN_EXPECT);

async function ticket() {
  const res = await fetch(`${base}/v1/stream-tickets`, {
    method: "POST",
    headers: { Authorization: `Bearer ${token}` },
  });
  assert.equal(res.status, 201);
  const body = await res.json();
  assert.ok(body.ticket && body.expires_at);
  return body.ticket;
}

// Collects `count` message events from es, then closes it.
function collect(es, count) {
  return new Promise((resolve, reject) => {
    const got = [];
    const timer = setTimeout(() => { es.close(); reject(new Error(`got ${got.length} of ${count}`)); }, 15000);
    es.addEventListener("message", (e) => {
      if (got.length === count) return; // the rest of a chunk is dispatched after close()
      got.push({ id: e.lastEventId, data: JSON.parse(e.data) });
      if (got.length === count) { clearTimeout(timer); es.close(); resolve(got); }
    });
    es.addEventListener("error", () => {
      if (es.readyState === EventSource.CLOSED) { clearTimeout(timer); reject(new Error("stream closed")); }
    });
  });
}

function checkSequence(got, from) {
  got.forEach((e, i) => {
    assert.equal(e.data.data.n, from + i, "in order, exactly once");
    assert.equal(e.data.id, e.id, "the frame id is the event's id");
    assert.equal(e.data.kind, "message");
  });
}

test("a ticket opens the stream and every event arrives once, in order", async () => {
  const es = new EventSource(`${base}/v1/feed/stream?after=${encodeURIComponent(after)}&ticket=${await ticket()}`);
  checkSequence(await collect(es, expect), 0);
});

test("a used ticket is refused and the EventSource stops", async () => {
  const t = await ticket();
  await collect(new EventSource(`${base}/v1/feed/stream?after=${encodeURIComponent(after)}&ticket=${t}`), 1);
  const again = new EventSource(`${base}/v1/feed/stream?after=${encodeURIComponent(after)}&ticket=${t}`);
  const status = await new Promise((resolve) => {
    again.addEventListener("error", (e) => resolve({ code: e.code, state: again.readyState }));
  });
  assert.equal(status.code, 401);
  assert.equal(status.state, EventSource.CLOSED);
});

test("a bearer token through fetch resumes from an event id", async () => {
  const half = Math.floor(expect / 2);
  const first = await collect(new EventSource(`${base}/v1/feed/stream?after=${encodeURIComponent(after)}`, {
    fetch: (url, init) => fetch(url, { ...init, headers: { ...init?.headers, Authorization: `Bearer ${token}` } }),
  }), half);
  const resume = first[first.length - 1].id;
  const rest = await collect(new EventSource(`${base}/v1/feed/stream?after=${encodeURIComponent(resume)}`, {
    fetch: (url, init) => fetch(url, { ...init, headers: { ...init?.headers, Authorization: `Bearer ${token}` } }),
  }), expect - half);
  checkSequence(rest, half);
});
