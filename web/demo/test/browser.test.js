// The demo page in Debian's chromium (playwright-core; never a downloaded browser), against a
// real `tocsin dev` started by web/demo's TestDemoInChromium:
//   TOCSIN_BASE         the node (serves the page at /)
//   TOCSIN_CONTROL      the Go test's control service: POST /sql, POST /switch?push=on|off,
//                       POST /kill, POST /start, GET /token?sub=
//   TOCSIN_CHROMIUM     the browser
//   TOCSIN_SCREENSHOTS  where a failed scenario leaves screenshots of its pages
// Scenarios run one after another: they share the node, its push switch and its metrics.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { chromium } from "playwright-core";

const base = process.env.TOCSIN_BASE;
const control = process.env.TOCSIN_CONTROL;
const shots = process.env.TOCSIN_SCREENSHOTS;

let browser;
before(async () => {
  browser = await chromium.launch({
    executablePath: process.env.TOCSIN_CHROMIUM,
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
});
after(() => browser?.close());

async function ctl(method, p, body) {
  const res = await fetch(`${control}${p}`, { method, body });
  const text = await res.text();
  assert.ok(res.ok, `${method} ${p}: ${res.status} ${text}`);
  return text;
}
const sql = (q) => ctl("POST", "/sql", q);
let comments = 0;
/** comment inserts n comments by bob on Alice's portfolio (alice and bob hear of them) and returns their bodies. */
async function comment(n, label) {
  const bodies = Array.from({ length: n }, () => `${label}-${++comments}`);
  for (const b of bodies) await sql(`insert into comment (portfolio_id, author_id, body) values (1, 'bob', '${b}')`);
  return bodies;
}

/** until polls cond every 25 ms until it holds, or fails after ms. */
async function until(cond, what, ms = 15000) {
  const deadline = Date.now() + ms;
  let last;
  while (!(last = await cond())) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
  return last;
}

/** streamsOpen reads tocsin_streams_open from the node's metrics. */
async function streamsOpen() {
  const text = await (await fetch(`${base}/metrics`)).text();
  const m = text.match(/^tocsin_streams_open (\d+)/m);
  assert.ok(m, "tocsin_streams_open is exported");
  return Number(m[1]);
}

const transport = (page) => page.textContent('[data-testid="transport"]');
const unread = async (page) => Number(await page.textContent('[data-testid="unread"]'));
/** shown returns the page's feed entries: {id, text}, top to bottom. */
const shown = (page) => page.$$eval('[data-testid="event"]', (els) => els.map((e) => ({ id: e.dataset.id, text: e.textContent })));

/** bodiesShown returns how many times each body appears on the page; it fails on a duplicate id. */
async function bodiesShown(page) {
  const entries = await shown(page);
  const ids = entries.map((e) => e.id);
  assert.equal(new Set(ids).size, ids.length, "no entry shown twice");
  const counts = new Map();
  for (const e of entries) {
    const body = e.text.replace(/^bob: /, "");
    counts.set(body, (counts.get(body) ?? 0) + 1);
  }
  return counts;
}
const showsAll = async (page, bodies) => {
  const c = await bodiesShown(page);
  return bodies.every((b) => c.get(b) === 1);
};

/** scenario runs fn with a fresh browser context; a failure leaves screenshots of its pages. */
function scenario(name, fn) {
  test(name, async () => {
    const context = await browser.newContext();
    const open = async (query = "") => {
      const page = await context.newPage();
      page.on("pageerror", (e) => console.error(`[page] ${e}`));
      await page.goto(`${base}/?user=alice${query}`);
      return page;
    };
    try {
      await fn({ context, open });
    } catch (err) {
      const slug = name.replace(/[^a-z0-9]+/gi, "-").slice(0, 60);
      for (const [i, page] of context.pages().entries()) {
        await page.screenshot({ path: path.join(shots, `${slug}-${i}.png`), fullPage: true }).catch(() => {});
      }
      throw err;
    } finally {
      await context.close();
      await until(async () => (await streamsOpen()) === 0, "the scenario's streams to close");
    }
  });
}

scenario("1. a row inserted with SQL appears on the page within 1 s over SSE", async ({ open }) => {
  const page = await open();
  await until(async () => (await transport(page)) === "sse" && (await streamsOpen()) === 1, "an open stream");
  const start = Date.now();
  const [body] = await comment(1, "sse");
  await page.waitForFunction((b) => [...document.querySelectorAll('[data-testid="event"]')].some((e) => e.textContent.includes(b)),
    body, { timeout: 1000, polling: "raf" });
  console.log(`insert → on the page over SSE: ${Date.now() - start} ms (the insert's own round trip included)`);
  assert.equal(await transport(page), "sse");
});

scenario("2. push off → long-poll, changes still arrive, none lost; on → back to sse", async ({ open }) => {
  const page = await open("&climb=500");
  await until(async () => (await transport(page)) === "sse" && (await streamsOpen()) === 1, "an open stream");
  const before = await comment(2, "before-off");
  await until(() => showsAll(page, before), "events before the switch");
  try {
    await ctl("POST", "/switch?push=off");
    await until(async () => (await transport(page)) === "long-poll", "long-poll");
    const during = await comment(3, "push-off");
    await until(() => showsAll(page, [...before, ...during]), "events while push is off");
  } finally {
    await ctl("POST", "/switch?push=on");
  }
  await until(async () => (await transport(page)) === "sse", "back to sse");
  const afterOn = await comment(2, "push-on");
  await until(() => showsAll(page, [...before, ...afterOn]), "events after push is on again");
});

scenario("3. the server is killed and restarted: the page catches up, no loss, no duplicate", async ({ open }) => {
  const page = await open("&climb=500");
  await until(async () => (await transport(page)) === "sse" && (await streamsOpen()) === 1, "an open stream");
  const first = await comment(2, "before-kill");
  await until(() => showsAll(page, first), "events before the kill");
  await ctl("POST", "/kill");
  const whileDown = await comment(3, "while-down"); // captured by the trigger; sequenced after the restart
  await ctl("POST", "/start");
  const afterStart = await comment(2, "after-restart");
  await until(() => showsAll(page, [...first, ...whileDown, ...afterStart]), "every event once after the restart", 40000);
});

scenario("4. two tabs hold one stream; closing the leader hands over without loss", async ({ open }) => {
  const a = await open();
  await until(async () => (await transport(a)) === "sse" && (await streamsOpen()) === 1, "tab A's stream");
  const b = await open();
  await until(async () => (await transport(b)) === "sse", "tab B shows the leader's transport");
  const both = await comment(2, "two-tabs");
  await until(async () => (await showsAll(a, both)) && (await showsAll(b, both)), "both tabs updated");
  assert.equal(await streamsOpen(), 1, "one stream for two tabs");
  await a.close(); // the leader: its lock is released, B takes over from its cursor
  const handover = await comment(2, "handover");
  await until(async () => (await streamsOpen()) === 1, "B's stream");
  const later = await comment(1, "after-handover");
  await until(() => showsAll(b, [...both, ...handover, ...later]), "B has everything once");
  assert.equal(await streamsOpen(), 1);
  const newest = (await shown(b))[0].id;
  await until(async () => (await b.evaluate(() => localStorage.getItem("tocsin:demo:alice"))) === newest,
    "the shared cursor persisted in localStorage");
});

scenario("5. idle or hidden: the server sees the stream close; activity or showing the page brings the missed events", async ({ open }) => {
  const page = await open("&idleAfter=2500");
  await until(async () => (await transport(page)) === "sse" && (await streamsOpen()) === 1, "an open stream");
  await until(async () => (await streamsOpen()) === 0, "the idle page's stream to close");
  const missed = await comment(2, "while-idle");
  assert.equal(await streamsOpen(), 0, "still idle");
  await page.mouse.move(50, 50);
  await page.mouse.move(80, 90);
  await until(async () => (await streamsOpen()) === 1, "the stream to reopen on activity");
  await until(() => showsAll(page, missed), "the events missed while idle");

  // A hidden page lets its stream go at once; shown again, it catches up. (Headless pages
  // are always visible: the test stands in for the browser's visibility change.)
  const setVisibility = (state) => page.evaluate((v) => {
    Object.defineProperty(document, "visibilityState", { configurable: true, get: () => v });
    document.dispatchEvent(new Event("visibilitychange"));
  }, state);
  await setVisibility("hidden");
  await until(async () => (await streamsOpen()) === 0, "the hidden page's stream to close");
  const whileHidden = await comment(2, "while-hidden");
  await setVisibility("visible");
  await until(async () => (await streamsOpen()) === 1, "the stream to reopen when the page is shown");
  await until(() => showsAll(page, [...missed, ...whileHidden]), "the events missed while hidden");
});

scenario("6. the unread badge agrees in two tabs after mark read in one", async ({ open }) => {
  const a = await open();
  await until(async () => (await transport(a)) === "sse" && (await streamsOpen()) === 1, "tab A's stream");
  const b = await open();
  await until(async () => (await transport(b)) === "sse", "tab B follows");
  const tok = await ctl("GET", "/token?sub=alice");
  const serverUnread = async () =>
    (await (await fetch(`${base}/v1/inbox/counts`, { headers: { Authorization: `Bearer ${tok}` } })).json()).unread;
  const fresh = await comment(3, "unread");
  await until(async () => (await showsAll(a, fresh)) && (await showsAll(b, fresh)), "the comments in both tabs");
  await until(async () => {
    const n = await serverUnread();
    return n >= 3 && (await unread(a)) === n && (await unread(b)) === n;
  }, "both badges at the server's unread count");
  await b.click('[data-testid="mark-read"]');
  await until(async () => (await serverUnread()) === 0 && (await unread(a)) === 0 && (await unread(b)) === 0,
    "both badges at 0 after mark read in B");
});

scenario("7. a privileges-changed message and a portfolio change make the page refetch", async ({ open }) => {
  const page = await open();
  await until(async () => (await transport(page)) === "sse" && (await streamsOpen()) === 1, "an open stream");
  const refetches = async () => Number(await page.textContent('[data-testid="refetches"]'));
  await until(async () => (await refetches()) >= 1, "the first fetch");
  const before = await refetches();
  await sql(`select tocsin.publish('alice', 'privileges', '{"role": "reviewer"}')`);
  await until(async () => (await refetches()) === before + 1, "a refetch after privileges changed");
  await sql(`update portfolio set title = 'Alice''s thesis (final)' where id = 1`);
  await until(async () => (await refetches()) === before + 2, "a refetch after the portfolio changed");
});
