import type { BackoffConfig } from "./backoff.js";
import { PageActivity, canShareAcrossTabs, isBrowser, leadTabs, webStorage, type TabMessage } from "./browser.js";
import type { Client } from "./client.js";
import { CursorLog } from "./cursor.js";
import { Ladder, alwaysActive, type Activity } from "./ladder.js";
import { memoryStorage, type CursorStorage } from "./storage.js";
import type { Event, TransportName } from "./types.js";

/** Options of client.subscribe. */
export interface SubscribeOptions {
  /**
   * Where to start: a cursor, `"now"`, or `""` for the oldest retained entry. Default: the
   * persisted cursor of storageKey, else `"now"`.
   */
  after?: string;
  /** New events, in order, each delivered once, and the cursor after them. */
  onEvents(events: Event[], cursor: string): void;
  /** The cursor expired (410) or the feed was reset: refetch your data. Events continue from now. */
  onReset?(): void;
  /** The transport changed: `"sse"`, `"long-poll"` or `"short-poll"`. */
  onTransport?(name: TransportName): void;
  /** A failure the subscription recovers from by itself (it retries). For logs and status. */
  onError?(err: unknown): void;
  /** Where the cursor persists. Default: localStorage in browsers, memory elsewhere; null: nowhere. */
  storage?: CursorStorage | null;
  /** The storage key, also the name of the tabs' lock and channel. Default "tocsin:cursor"; use one per user. */
  storageKey?: string;
  /** Browsers: let the connection go after this long without input (and while hidden). Default 5 min. */
  idleAfterMs?: number;
  /** Least time between checks that may climb back to SSE. Default 60 s. */
  climbBackIntervalMs?: number;
  /** Failed attempts in a row before stepping down the ladder. Default 3. */
  failuresBeforeFallback?: number;
  /** Browsers: one connection for all the origin's tabs (Web Locks + BroadcastChannel). Default true. */
  shareAcrossTabs?: boolean;
  /** Overrides when to hold a connection (default: page activity in browsers, always elsewhere). */
  activity?: Activity;
  /** Events per poll. Default 100. */
  limit?: number;
  backoff?: BackoffConfig;
}

/** A running subscription. */
export interface Subscription {
  /** Stops it: the connection closes; the persisted cursor stays. */
  close(): void;
  /** The cursor after the last delivered event. */
  readonly cursor: string | undefined;
  /** The transport in use (in a follower tab: the leader's). */
  readonly transport: TransportName | undefined;
  /** Whether this tab holds the connection (always true outside browsers). */
  readonly leader: boolean;
}

export const defaultIdleAfterMs = 5 * 60_000;
const pingThrottleMs = 1000;

/** subscribe implements Client.subscribe. */
export function subscribe(client: Client, opts: SubscribeOptions): Subscription {
  const browser = isBrowser();
  const key = opts.storageKey ?? "tocsin:cursor";
  const storage = opts.storage === null ? undefined : (opts.storage ?? (browser ? webStorage() : undefined) ?? memoryStorage());
  const share = (opts.shareAcrossTabs ?? true) && canShareAcrossTabs();
  const idleAfterMs = opts.idleAfterMs ?? defaultIdleAfterMs;
  const page = !opts.activity && browser ? new PageActivity(idleAfterMs) : undefined;
  const activity = opts.activity ?? page ?? alwaysActive;
  const closing = new AbortController();
  const log = new CursorLog();
  let transport: TransportName | undefined;
  let leader = !share;
  let tabs: { post(m: TabMessage): void } | undefined;

  const report = (err: unknown) => opts.onError?.(err);
  const persist = (cursor: string | undefined) => {
    if (!storage) return;
    Promise.resolve(cursor === undefined ? storage.remove(key) : storage.set(key, cursor)).catch(report);
  };
  const setTransport = (name: TransportName) => {
    if (name === transport) return;
    transport = name;
    if (leader) tabs?.post({ t: "transport", name });
    opts.onTransport?.(name);
  };
  const deliver = (events: Event[], cursor: string) => {
    const fresh = log.accept(events, cursor);
    if (!leader) return fresh;
    persist(cursor);
    if (fresh.length > 0) tabs?.post({ t: "events", events: fresh, cursor });
    return fresh;
  };
  const reset = () => {
    log.restart("now");
    if (leader) {
      persist(undefined);
      tabs?.post({ t: "reset" });
    }
    opts.onReset?.();
  };

  const ladder = new Ladder({
    client,
    cursor: () => log.cursor,
    deliver: (events, cursor) => {
      const fresh = deliver(events, cursor);
      if (fresh.length > 0) opts.onEvents(fresh, cursor);
    },
    reset,
    transport: setTransport,
    error: report,
    activity,
    streamAuth: client.options.streamAuth ?? (browser ? "ticket" : "header"),
    climbBackIntervalMs: opts.climbBackIntervalMs ?? 60_000,
    failuresBeforeFallback: opts.failuresBeforeFallback ?? 3,
    backoff: opts.backoff ?? client.options.backoff,
    limit: opts.limit ?? 100,
  });

  const start = async () => {
    let after = opts.after;
    if (after === undefined && storage) after = (await storage.get(key)) ?? undefined;
    log.restart(after ?? "now");
    if (closing.signal.aborted) return;
    if (!share) return ladder.run(closing.signal);

    // Followers hear the leader; the leader hears who is active. Followers report their
    // own activity so that a hidden leader tab keeps the connection for a visible one.
    let lastPing = 0;
    const ping = () => {
      if (leader || !page?.localActive() || Date.now() - lastPing < pingThrottleMs) return;
      lastPing = Date.now();
      tabs?.post({ t: "active" });
    };
    const onMessage = (m: TabMessage) => {
      if (leader) {
        if (m.t === "hello" && transport) tabs?.post({ t: "transport", name: transport });
        if (m.t === "active") page?.poke();
        return;
      }
      switch (m.t) {
        case "events": {
          const fresh = log.accept(m.events as Event[], m.cursor);
          if (fresh.length > 0) opts.onEvents(fresh, m.cursor);
          break;
        }
        case "reset":
          log.restart("now");
          opts.onReset?.();
          break;
        case "transport":
          setTransport(m.name as TransportName);
          break;
      }
    };
    const stopPinging = page?.onChange(ping);
    const pinger = setInterval(ping, Math.max(pingThrottleMs, idleAfterMs / 3));
    closing.signal.addEventListener("abort", () => { clearInterval(pinger); stopPinging?.(); }, { once: true });
    tabs = leadTabs(key, async () => {
      // Take over from this tab's cursor: it followed every event the last leader posted.
      leader = true;
      transport = undefined;
      persist(log.cursor);
      await ladder.run(closing.signal);
    }, onMessage, closing.signal, report);
    tabs.post({ t: "hello" });
    ping();
  };
  start().catch((err: unknown) => { if (!closing.signal.aborted) report(err); });

  return {
    close() {
      closing.abort();
      page?.dispose();
    },
    get cursor() { return log.cursor; },
    get transport() { return transport; },
    get leader() { return leader; },
  };
}
