// @tocsin/client against a real `tocsin serve` (started by web/sdk's TestSDKAgainstServe).
//   TOCSIN_BASE     the node's base URL
//   TOCSIN_CONTROL  the Go test's control service: POST /sql, POST /switch?push=on|off,
//                   POST /kill, POST /start, GET /token?sub=&ttl=&scope=
// The node runs with --sse-heartbeat 1s, --max-streams-per-recipient 1,
// --message-group-window 1s, --long-poll-max 5s, --poll-interval 1s. Each test uses its own
// recipient. Tests in this file run one after another (some flip the push switch).
import { test } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { createClient, memoryStorage, TocsinError, backoffMs, fold, InboxCounter } from "../dist/index.js";

const base = process.env.TOCSIN_BASE;
const control = process.env.TOCSIN_CONTROL;

async function ctl(method, path, body) {
  const res = await fetch(`${control}${path}`, { method, body });
  const text = await res.text();
  assert.ok(res.ok, `${method} ${path}: ${res.status} ${text}`);
  return text;
}
const sql = (q) => ctl("POST", "/sql", q);
const token = (sub, { ttl = "1h", scope = "" } = {}) =>
  ctl("GET", `/token?sub=${encodeURIComponent(sub)}&ttl=${ttl}&scope=${encodeURIComponent(scope)}`);
const push = (on) => ctl("POST", `/switch?push=${on ? "on" : "off"}`);

/** publish sends messages {n: from..to-1} to user, in order, in one transaction. */
const publish = (user, from, to) =>
  sql(`do $$ begin for i in ${from}..${to - 1} loop perform tocsin.publish('${user}', 'n', jsonb_build_object('n', i)); end loop; end $$`);

/** until polls cond every 20 ms until it holds, or fails after ms. */
async function until(cond, what, ms = 20000) {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** follow subscribes user and records everything the subscription reports. */
async function follow(user, opts = {}, clientOpts = {}) {
  const client = createClient({ baseUrl: opts.baseUrl ?? base, getToken: () => token(user), ...clientOpts });
  const after = opts.after ?? (await client.feed({ after: "now" })).cursor;
  const rec = { client, events: [], transports: [], errors: [], resets: 0 };
  rec.sub = client.subscribe({
    after,
    backoff: { baseMs: 50, capMs: 500 },
    ...opts,
    onEvents: (events) => rec.events.push(...events),
    onTransport: (name) => rec.transports.push(name),
    onError: (err) => rec.errors.push(err),
    onReset: () => rec.resets++,
  });
  rec.transport = () => rec.transports.at(-1);
  rec.ns = () => rec.events.filter((e) => e.kind === "message").map((e) => e.data.n);
  return rec;
}

const range = (from, to) => Array.from({ length: to - from }, (_, i) => from + i);

test("SSE: every event once, in order; the frame's id is the event's id", async () => {
  const r = await follow("sdk-sse");
  try {
    await until(() => r.transport() === "sse", "sse");
    await publish("sdk-sse", 0, 25);
    await until(() => r.events.length >= 25, "25 events");
    assert.deepEqual(r.ns(), range(0, 25));
    assert.equal(r.sub.cursor, r.events.at(-1).id);
  } finally {
    r.sub.close();
  }
});

test("push off → long poll with nothing lost; push on → back to SSE", async () => {
  const r = await follow("sdk-switch", { climbBackIntervalMs: 300 });
  try {
    await until(() => r.transport() === "sse", "sse");
    await publish("sdk-switch", 0, 10);
    await until(() => r.events.length >= 10, "10 events");
    await push(false);
    await until(() => r.transport() === "long-poll", "long-poll after push off");
    await publish("sdk-switch", 10, 20);
    await until(() => r.events.length >= 20, "20 events");
    await push(true);
    await until(() => r.transport() === "sse", "sse after push on");
    await publish("sdk-switch", 20, 30);
    await until(() => r.events.length >= 30, "30 events");
    assert.deepEqual(r.ns(), range(0, 30));
    assert.deepEqual(r.transports, ["sse", "long-poll", "sse"]);
  } finally {
    r.sub.close();
    await push(true);
  }
});

/** proxy serves on loopback: stream requests go to onStream, feed requests to onFeed (or through). */
async function proxy({ onStream, onFeed }) {
  const server = http.createServer(async (req, res) => {
    const url = new URL(req.url, base);
    if (url.pathname === "/v1/feed/stream" && onStream) return onStream(req, res);
    if (url.pathname === "/v1/feed" && onFeed && onFeed(req, res, url)) return;
    const body = req.method === "GET" ? undefined : await new Promise((ok) => {
      const chunks = [];
      req.on("data", (c) => chunks.push(c)).on("end", () => ok(Buffer.concat(chunks)));
    });
    const headers = { ...req.headers };
    delete headers.host;
    delete headers.connection;
    const up = await fetch(`${base}${req.url}`, { method: req.method, headers, body });
    res.writeHead(up.status, Object.fromEntries(up.headers));
    res.end(Buffer.from(await up.arrayBuffer()));
  });
  await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
  return { url: `http://127.0.0.1:${server.address().port}`, close: () => { server.closeAllConnections(); server.close(); } };
}

test("a stream silent for twice the heartbeat (a buffering proxy) → long poll", async () => {
  const p = await proxy({
    onStream: (_req, res) => { res.writeHead(200, { "Content-Type": "text/event-stream" }); res.flushHeaders(); },
  });
  const r = await follow("sdk-silent", { baseUrl: p.url });
  try {
    await until(() => r.transport() === "long-poll", "long-poll after a silent stream");
    assert.deepEqual(r.transports, ["sse", "long-poll"]);
    assert.ok(r.errors.some((e) => /silent/.test(String(e.message))), "the silence is reported");
    await publish("sdk-silent", 0, 5);
    await until(() => r.events.length >= 5, "5 events by long poll");
    assert.deepEqual(r.ns(), range(0, 5));
  } finally {
    r.sub.close();
    p.close();
  }
});

test("204 on the stream → long poll; failing long polls → short poll, nothing lost", async () => {
  let longPolls = 0;
  const p = await proxy({
    onStream: (_req, res) => { res.writeHead(204); res.end(); },
    onFeed: (_req, res, url) => {
      if (Number(url.searchParams.get("wait") ?? 0) === 0) return false; // short polls pass
      longPolls++;
      res.writeHead(502, { "Content-Type": "text/plain" });
      res.end("bad gateway");
      return true;
    },
  });
  const r = await follow("sdk-short", { baseUrl: p.url, failuresBeforeFallback: 2 });
  try {
    await until(() => r.transport() === "short-poll", "short-poll");
    assert.deepEqual(r.transports, ["sse", "long-poll", "short-poll"]);
    assert.equal(longPolls, 2, "stepped down after 2 failed long polls");
    await publish("sdk-short", 0, 5);
    await until(() => r.events.length >= 5, "5 events by short poll");
    assert.deepEqual(r.ns(), range(0, 5));
  } finally {
    r.sub.close();
    p.close();
  }
});

test("410 → onReset, then events from now", async () => {
  const client = createClient({ baseUrl: base, getToken: () => token("sdk-reset") });
  const { cursor } = await client.feed({ after: "now" });
  const [epoch, pos] = cursor.split("-"); // a test may know the shape; clients never build cursors
  const r = await follow("sdk-reset", { after: `${epoch}-${Number(pos) + 1000000}` });
  try {
    await until(() => r.resets === 1, "onReset");
    await until(() => r.sub.cursor !== "now", "a concrete cursor after the reset");
    await until(() => r.transport() === "sse", "sse");
    await publish("sdk-reset", 0, 3);
    await until(() => r.events.length >= 3, "3 events after the reset");
    assert.deepEqual(r.ns(), range(0, 3));
  } finally {
    r.sub.close();
  }
});

test("429 → waits Retry-After, then connects", async () => {
  const held = new AbortController();
  const tok = await token("sdk-429");
  const first = await fetch(`${base}/v1/feed/stream?after=now`, { headers: { Authorization: `Bearer ${tok}` }, signal: held.signal });
  assert.equal(first.status, 200);
  const r = await follow("sdk-429");
  try {
    await until(() => r.errors.some((e) => e instanceof TocsinError && e.status === 429), "a 429");
    const e = r.errors.find((x) => x.status === 429);
    assert.equal(e.retryAfterMs, 10000, "Retry-After of a 429 is 10 s");
    held.abort();
    await publish("sdk-429", 0, 3);
    await until(() => r.events.length >= 3, "3 events once the other stream closed", 30000);
    assert.deepEqual(r.ns(), range(0, 3));
    assert.equal(r.transport(), "sse", "a 429 is waited out, not a reason to step down");
  } finally {
    held.abort();
    r.sub.close();
  }
});

test("401 → getToken is called again and the request retried", async () => {
  let calls = 0;
  const client = createClient({ baseUrl: base, getToken: async () => (++calls === 1 ? "not-a-token" : token("sdk-401")) });
  const page = await client.feed({ after: "now" });
  assert.equal(calls, 2);
  assert.ok(page.cursor);
  await client.feed({ after: page.cursor });
  assert.equal(calls, 2, "the refreshed token is kept");
  const bad = createClient({ baseUrl: base, getToken: () => "still-not-a-token" });
  await assert.rejects(bad.feed(), (e) => e instanceof TocsinError && e.status === 401 && e.slug === "token-invalid");
});

test("tocsin killed and restarted: no loss, no duplicate", async () => {
  const r = await follow("sdk-restart", { climbBackIntervalMs: 500 });
  try {
    await until(() => r.transport() === "sse", "sse");
    await publish("sdk-restart", 0, 5);
    await until(() => r.events.length >= 5, "5 events");
    await ctl("POST", "/kill");
    await publish("sdk-restart", 5, 10); // into the outbox while no node runs
    await ctl("POST", "/start");
    await publish("sdk-restart", 10, 15);
    await until(() => r.events.length >= 15, "15 events after the restart", 40000);
    assert.deepEqual(r.ns(), range(0, 15));
  } finally {
    r.sub.close();
  }
});

test("a resumed subscription starts from the persisted cursor", async () => {
  const storage = memoryStorage();
  const a = await follow("sdk-resume", { storage, storageKey: "k" });
  await publish("sdk-resume", 0, 5);
  await until(() => a.events.length >= 5, "5 events");
  a.sub.close();
  assert.equal(await storage.get("k"), a.sub.cursor);
  await publish("sdk-resume", 5, 10);
  const client = createClient({ baseUrl: base, getToken: () => token("sdk-resume") });
  const got = [];
  const b = client.subscribe({ storage, storageKey: "k", onEvents: (ev) => got.push(...ev) });
  try {
    await until(() => got.length >= 5, "the 5 events published in between");
    assert.deepEqual(got.map((e) => e.data.n), range(5, 10));
  } finally {
    b.close();
  }
});

test("inbox, publish with an idempotency key, capabilities", async () => {
  const user = "sdk-inbox";
  const client = createClient({ baseUrl: base, getToken: () => token(user) });
  const backend = createClient({ baseUrl: base, getToken: () => token("backend", { scope: "tocsin:publish" }) });
  const caps = await client.capabilities();
  assert.equal(caps.push, true);
  assert.equal(caps.heartbeat_seconds, 1);
  const msg = { recipients: [user], topic: "order", data: { id: 1 } };
  const one = await backend.publish(msg, { idempotencyKey: "order-1" });
  const again = await backend.publish(msg, { idempotencyKey: "order-1" });
  assert.equal(again.message_id, one.message_id, "the same key publishes once");
  await assert.rejects(backend.publish({ ...msg, data: { id: 2 } }, { idempotencyKey: "order-1" }), (e) => e.status === 422);
  await backend.publish({ ...msg, data: { id: 2 } });
  await backend.publish({ ...msg, data: { id: 3 } });
  await until(async () => (await client.inbox.counts()).unread === 3, "3 unread");
  const page = await client.inbox.list({ state: "unread" });
  assert.deepEqual(page.entries.map((e) => e.data.id), [3, 2, 1], "newest first");
  const read = await client.inbox.markRead({ ids: [page.entries[0].id] });
  assert.deepEqual(read, { changed: 1, counts: { unread: 2, unseen: 2 } });
  const seen = await client.inbox.markSeen({ up_to: page.entries[0].id });
  assert.deepEqual(seen.counts, { unread: 2, unseen: 0 });
  const archived = await client.inbox.archive({ ids: [page.entries[2].id] });
  assert.deepEqual(archived.counts, { unread: 1, unseen: 0 });
  await assert.rejects(client.inbox.markRead({}), (e) => e instanceof TocsinError && e.status === 400);
});

test("digests that replace fold into one entry; counts agree with the server", async () => {
  const user = "sdk-digest";
  const backend = createClient({ baseUrl: base, getToken: () => token("backend", { scope: "tocsin:publish" }) });
  const r = await follow(user);
  try {
    const send = (n) => backend.publish({ recipients: [user], topic: "comment", data: { n }, group: "portfolio-1" });
    await send(1);
    await send(2);
    await until(() => r.events.some((e) => e.kind === "digest"), "a first digest");
    await send(3);
    await until(() => r.events.filter((e) => e.kind === "digest").length >= 2, "a second digest");
    const [d1, d2] = r.events.filter((e) => e.kind === "digest");
    assert.equal(d2.replaces, d1.id);
    const shown = fold([], r.events, (e) => e);
    assert.deepEqual(shown.map((e) => e.id), [d2.id], "the second digest took the first one's place");
    assert.equal(shown[0].data.count, 3);
    let counts;
    const counter = new InboxCounter({ unread: 0, unseen: 0 }, (c) => { counts = c; }, () => r.client.inbox.counts());
    counter.apply(r.events);
    const server = await r.client.inbox.counts();
    await until(() => counts?.unread === server.unread && counts?.unseen === server.unseen, "counts agreeing with the server");
    assert.equal(server.unread, 1);
  } finally {
    r.sub.close();
  }
});

test("tocsin serve exposes no demo page and no dev token endpoint", async () => {
  for (const path of ["/", "/dev/token?user=alice", "/dev/app.js"]) {
    const res = await fetch(`${base}${path}`);
    assert.equal(res.status, 404, path);
  }
});

test("backoff: full jitter under an exponential, capped ceiling", () => {
  const cfg = { baseMs: 100, capMs: 1000 };
  assert.equal(backoffMs(1, cfg, () => 0), 0);
  assert.equal(backoffMs(1, cfg, () => 0.999), 99);
  assert.equal(backoffMs(3, cfg, () => 0.999), 399);
  assert.equal(backoffMs(30, cfg, () => 0.999), 999, "capped");
});
