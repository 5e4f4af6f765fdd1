// The ePortfolio demo: comments on Alice's portfolio, an unread badge, mark-as-read, and a
// page that refetches when the portfolio changes (or its user's privileges do). It uses
// only the SDK's public surface. `tocsin dev` serves it at / (?user=alice|bob).
import { createClient, fold, InboxCounter, type DigestData, type Event, type InboxEntry } from "../../sdk/src/index.js";

const params = new URLSearchParams(location.search);
const user = params.get("user") === "bob" ? "bob" : "alice";
const ms = (name: string) => (params.has(name) ? Number(params.get(name)) : undefined);

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const feedList = $<HTMLUListElement>("feed");
const unreadBadge = $("unread");
const transportLabel = $("transport");
const refetches = $("refetches");

// In `tocsin dev` only, the page gets its user's token from a development endpoint.
const client = createClient({
  baseUrl: location.origin,
  getToken: async () => {
    const res = await fetch(`/dev/token?user=${user}`);
    if (!res.ok) throw new Error(`dev token: HTTP ${res.status}`);
    return ((await res.json()) as { token: string }).token;
  },
});

type Row = { id: string; kind: string; text: string; unread: boolean };
let rows: Row[] = [];
const known = new Set<string>();
const counter = new InboxCounter({ unread: 0, unseen: 0 }, (c) => { unreadBadge.textContent = String(c.unread); },
  () => client.inbox.counts());

function describe(e: Event | InboxEntry): string {
  switch (e.kind) {
    case "digest":
      return `${(e.data as DigestData).count} new comments`;
    case "notification":
    case "change": {
      const d = (e.data ?? {}) as { author_id?: string; body?: string };
      if (e.topic === "comment") return `${d.author_id ?? "someone"}: ${d.body ?? "(comment)"}`;
      return `${e.topic} ${e.op ?? "changed"}`;
    }
    default:
      return `${e.topic}: ${JSON.stringify(e.data)}`;
  }
}

function render(): void {
  feedList.replaceChildren(...rows.map((r) => {
    const li = document.createElement("li");
    li.dataset.testid = "event";
    li.dataset.id = r.id;
    li.dataset.kind = r.kind;
    li.className = r.unread ? "unread" : "";
    li.textContent = r.text;
    return li;
  }));
}

// refetch reloads what the page shows: at start, after a 410, and when the portfolio or
// the user's privileges change. Events delivered while it runs are newer than what it may
// have read: it reads again until none arrived meanwhile (an event, once delivered, is in
// the inbox and its counts), then keeps the events the list does not show.
let during: Event[] | undefined;
let running: Promise<void> | undefined;
let again = false;
function refetch(): Promise<void> {
  if (running) {
    again = true; // one more round once the current one ends
    return running;
  }
  running = (async () => {
    try {
      do {
        again = false;
        await refetchOnce();
      } while (again);
    } finally {
      running = undefined;
      during = undefined;
    }
  })();
  return running;
}

async function refetchOnce(): Promise<void> {
  during = [];
  let page, counts;
  // The list and the counts are two reads: the counts are taken between two reads of the
  // list that agree, so they count exactly what the list shows (an entry the list already
  // holds is never counted again when its event arrives, nor left out).
  for (let tries = 0; ; tries++) {
    const mark = during.length;
    page = await client.inbox.list({ state: "all", limit: 50 });
    counts = await client.inbox.counts();
    const check = await client.inbox.list({ state: "all", limit: 1 });
    const stable = (check.entries[0]?.id ?? null) === (page.entries[0]?.id ?? null);
    if ((stable && during.length === mark) || tries === 5) break;
  }
  const listed = page.entries.map((e) => ({ id: e.id, kind: e.kind, text: describe(e), unread: e.read_at === null }));
  for (const r of listed) known.add(r.id);
  const ids = new Set(listed.map((r) => r.id));
  rows = fold(listed, during.filter((e) => !ids.has(e.id)), toRow);
  during = undefined;
  counter.set(counts);
  refetches.textContent = String(Number(refetches.textContent ?? "0") + 1);
  render();
}

function toRow(e: Event): Row {
  return { id: e.id, kind: e.kind, text: describe(e), unread: e.kind !== "change" && e.kind !== "inbox" };
}

const sub = client.subscribe({
  after: "now", // the page fetches its data at start, then follows what comes next
  storageKey: `tocsin:demo:${user}`,
  idleAfterMs: ms("idleAfter"),
  climbBackIntervalMs: ms("climb"),
  onTransport: (name) => { transportLabel.textContent = name; },
  onReset: () => void refetch(),
  onError: (err) => console.warn("tocsin:", err),
  onEvents: (events) => {
    const fresh = events.filter((e) => !known.has(e.id));
    for (const e of fresh) known.add(e.id);
    during?.push(...fresh);
    counter.apply(fresh);
    for (const e of fresh) {
      if (e.kind === "inbox" && e.data.action === "read") {
        const ids = new Set(e.data.ids ?? []);
        rows = rows.map((r) => (ids.has(r.id) || e.data.up_to !== undefined ? { ...r, unread: false } : r));
      }
    }
    rows = fold(rows, fresh, toRow);
    render();
    if (fresh.some((e) => e.topic === "portfolio" || e.topic === "privileges")) void refetch();
  },
});

$<HTMLButtonElement>("mark-read").addEventListener("click", async () => {
  const newest = rows.find((r) => r.kind !== "change");
  if (!newest) return;
  const r = await client.inbox.markRead({ up_to: newest.id });
  counter.set(r.counts);
  rows = rows.map((x) => ({ ...x, unread: false }));
  render();
});

$("user").textContent = user;
window.addEventListener("pagehide", () => sub.close());
void refetch();
