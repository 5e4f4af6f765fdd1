import { backoffMs, sleep, type BackoffConfig } from "./backoff.js";
import { isAbort, type Client } from "./client.js";
import { TocsinError } from "./errors.js";
import { openStream, type StreamOutcome } from "./transport/sse.js";
import type { Capabilities, Event, TransportName } from "./types.js";

/**
 * Activity tells the ladder when to hold a connection: a browser page that is hidden or
 * idle lets its stream go, and takes it back from the cursor when the user returns.
 */
export interface Activity {
  /** active reports whether a connection should be held now. */
  active(): boolean;
  /** onChange calls fn whenever active() may have changed; it returns an unsubscribe. */
  onChange(fn: () => void): () => void;
}

/** Always active (Node, workers). */
export const alwaysActive: Activity = { active: () => true, onChange: () => () => {} };

/** What the ladder needs from its subscription. */
export interface LadderDeps {
  client: Client;
  /** The cursor to resume from. */
  cursor(): string | undefined;
  /** Hands over a page (or one stream event) and the cursor after it. */
  deliver(events: Event[], cursor: string): void;
  /** A 410: the application refetches, the cursor becomes "now". */
  reset(): void;
  transport(name: TransportName): void;
  error(err: unknown): void;
  activity: Activity;
  streamAuth: "ticket" | "header";
  /** Least time between two capability checks that may climb back to SSE. */
  climbBackIntervalMs: number;
  /** Consecutive failures of a transport before stepping down. */
  failuresBeforeFallback: number;
  backoff?: BackoffConfig;
  /** Events per poll. */
  limit: number;
}

/**
 * Ladder is the transport policy of one subscription, kept apart from the cursor (which
 * only LadderDeps holds) and from how bytes arrive (transport/sse.ts, the feed endpoint):
 *
 *  - SSE while `/v1/capabilities` says push is on;
 *  - long polling after a `204` or `event: push-disabled`, after failuresBeforeFallback
 *    failed streams in a row, or when a stream stays silent — not even a heartbeat — for
 *    twice the advertised heartbeat;
 *  - short polling every `poll_interval_seconds` after failuresBeforeFallback failed long
 *    polls;
 *  - climbing back (short → long poll, and to SSE when push is on) after a capability check,
 *    at most once per climbBackIntervalMs;
 *  - `410` → reset, then from "now"; `429`/`503` → wait Retry-After; other failures →
 *    exponential backoff with full jitter, capped.
 */
export class Ladder {
  readonly #d: LadderDeps;
  #mode: TransportName = "long-poll";
  #caps: Capabilities | undefined;
  #failures = 0;
  #lastClimbCheck = 0;
  #attempt: AbortController | undefined;

  constructor(deps: LadderDeps) {
    this.#d = deps;
  }

  /** run follows the feed until signal aborts. */
  async run(signal: AbortSignal): Promise<void> {
    const stopWatching = this.#d.activity.onChange(() => {
      if (!this.#d.activity.active()) this.#attempt?.abort(); // let the connection go
    });
    try {
      while (!signal.aborted) {
        await this.#untilActive(signal);
        if (signal.aborted) break;
        const attempt = new AbortController();
        const stop = () => attempt.abort();
        signal.addEventListener("abort", stop, { once: true });
        this.#attempt = attempt;
        try {
          await this.#step(attempt.signal);
        } finally {
          signal.removeEventListener("abort", stop);
        }
      }
    } finally {
      stopWatching();
    }
  }

  async #step(signal: AbortSignal): Promise<void> {
    if (!this.#caps) {
      try {
        this.#caps = await this.#d.client.capabilities({ signal });
      } catch (err) {
        return this.#failed(err, signal);
      }
      this.#mode = this.#caps.push ? "sse" : "long-poll";
      this.#lastClimbCheck = Date.now();
    } else if (this.#mode !== "sse" && Date.now() - this.#lastClimbCheck >= this.#d.climbBackIntervalMs) {
      this.#lastClimbCheck = Date.now();
      try {
        this.#caps = await this.#d.client.capabilities({ signal });
        if (this.#caps.push) this.#switch("sse");
        else if (this.#mode === "short-poll") this.#switch("long-poll");
      } catch (err) {
        if (signal.aborted) return;
        this.#d.error(err); // keep polling as we are
      }
    }
    this.#d.transport(this.#mode);
    if (this.#mode === "sse") return this.#stream(this.#caps, signal);
    return this.#poll(this.#caps, signal);
  }

  async #poll(caps: Capabilities, signal: AbortSignal): Promise<void> {
    const long = this.#mode === "long-poll";
    // A long poll ends by the next capability check, so that climbing back is not late.
    const untilCheck = Math.ceil((this.#lastClimbCheck + this.#d.climbBackIntervalMs - Date.now()) / 1000);
    const wait = long ? Math.max(1, Math.min(caps.long_poll_max_seconds, untilCheck)) : 0;
    let page;
    try {
      page = await this.#d.client.feed({ after: this.#d.cursor(), limit: this.#d.limit, wait }, { signal });
    } catch (err) {
      return this.#failed(err, signal);
    }
    this.#failures = 0;
    this.#d.deliver(page.events, page.cursor);
    if (!long && page.events.length < this.#d.limit) await sleep(caps.poll_interval_seconds * 1000, signal);
  }

  async #stream(caps: Capabilities, signal: AbortSignal): Promise<void> {
    const after = this.#d.cursor();
    const q = new URLSearchParams();
    if (after !== undefined) q.set("after", after);
    const headers: Record<string, string> = {};
    try {
      if (this.#d.streamAuth === "ticket") q.set("ticket", (await this.#d.client.streamTicket({ signal })).ticket);
      else headers.Authorization = `Bearer ${await this.#d.client.token()}`;
    } catch (err) {
      return this.#failed(err, signal);
    }
    const out: StreamOutcome = await openStream({
      url: `${this.#d.client.baseUrl}/v1/feed/stream?${q}`,
      headers,
      heartbeatMs: caps.heartbeat_seconds * 1000,
      signal,
      fetch: this.#d.client.options.fetch,
      onOpen: () => { this.#failures = 0; },
      onEvent: (e) => this.#d.deliver([e], e.id),
      onCursor: (cursor) => this.#d.deliver([], cursor),
    });
    switch (out.kind) {
      case "closed":
      case "reconnect":
        return;
      case "push-off":
        return this.#stepDown("long-poll");
      case "silent":
        this.#d.error(new TocsinError(`stream silent for ${2 * caps.heartbeat_seconds}s (a buffering proxy?): long polling`, 0));
        return this.#stepDown("long-poll");
      case "failed": {
        if (signal.aborted) return;
        if (out.status === 410) return this.#reset();
        if (out.status === 401) this.#d.client.invalidateToken();
        const err = new TocsinError(`stream failed: ${out.message}`, out.status, undefined, out.retryAfterMs);
        return this.#failed(err, signal);
      }
    }
  }

  /** #failed counts a failure, steps down after too many, and waits before the next try. */
  async #failed(err: unknown, signal: AbortSignal): Promise<void> {
    if (signal.aborted || isAbort(err)) return;
    if (err instanceof TocsinError && err.status === 410) return this.#reset();
    this.#d.error(err);
    this.#failures++;
    const retryAfter = err instanceof TocsinError && (err.status === 429 || err.status === 503) ? err.retryAfterMs : undefined;
    if (this.#caps && this.#failures >= this.#d.failuresBeforeFallback && this.#mode !== "short-poll" && retryAfter === undefined) {
      this.#stepDown(this.#mode === "sse" ? "long-poll" : "short-poll");
      return;
    }
    await sleep(retryAfter ?? backoffMs(this.#failures, this.#d.backoff), signal);
  }

  #reset(): void {
    this.#failures = 0;
    this.#d.reset();
  }

  #stepDown(to: TransportName): void {
    this.#lastClimbCheck = Date.now();
    this.#switch(to);
  }

  #switch(to: TransportName): void {
    this.#mode = to;
    this.#failures = 0;
  }

  #untilActive(signal: AbortSignal): Promise<void> {
    if (this.#d.activity.active() || signal.aborted) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => { off(); signal.removeEventListener("abort", done); resolve(); };
      const off = this.#d.activity.onChange(() => { if (this.#d.activity.active()) done(); });
      signal.addEventListener("abort", done, { once: true });
    });
  }
}
