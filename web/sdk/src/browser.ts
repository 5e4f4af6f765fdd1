// The browser-only parts of a subscription: the page's activity, localStorage, and the tab
// leadership (Web Locks + BroadcastChannel). Nothing else in the SDK touches the DOM.
import type { Activity } from "./ladder.js";
import type { CursorStorage } from "./storage.js";

/** isBrowser reports whether this is a page (a document with visibility and input events). */
export function isBrowser(): boolean {
  return typeof document !== "undefined" && typeof window !== "undefined";
}

/** canShareAcrossTabs reports whether tabs can elect a leader and talk to each other. */
export function canShareAcrossTabs(): boolean {
  return isBrowser() && typeof BroadcastChannel !== "undefined" && typeof navigator !== "undefined" && !!navigator.locks;
}

/** webStorage keeps cursors in localStorage (shared by the origin's tabs). */
export function webStorage(): CursorStorage | undefined {
  try {
    const ls = window.localStorage;
    return {
      get: (k) => ls.getItem(k),
      set: (k, v) => ls.setItem(k, v),
      remove: (k) => ls.removeItem(k),
    };
  } catch {
    return undefined; // storage disabled: memory only
  }
}

const inputEvents = ["pointerdown", "pointermove", "keydown", "wheel", "touchstart", "scroll"] as const;

/**
 * PageActivity is a page's Activity: active while the page is visible and had user input
 * within idleAfterMs, or while another tab of the same subscription reports recent input
 * (poke). Input and visibility changes are noticed at once; expiry by a timer.
 */
export class PageActivity implements Activity {
  readonly #idleAfterMs: number;
  #lastInput = Date.now();
  #lastPoke = -Infinity;
  #wasActive: boolean;
  #timer: ReturnType<typeof setTimeout> | undefined;
  readonly #listeners = new Set<() => void>();
  readonly #onInput = () => {
    const before = this.localActive();
    this.#lastInput = Date.now();
    if (!before) this.#changed();
    else this.#schedule();
  };
  readonly #onVisibility = () => {
    if (document.visibilityState === "visible") this.#lastInput = Date.now();
    this.#changed();
  };

  constructor(idleAfterMs: number) {
    this.#idleAfterMs = idleAfterMs;
    for (const t of inputEvents) window.addEventListener(t, this.#onInput, { capture: true, passive: true });
    document.addEventListener("visibilitychange", this.#onVisibility);
    this.#wasActive = this.active();
    this.#schedule();
  }

  /** localActive: this page is visible and its user did something within idleAfterMs. */
  localActive(): boolean {
    return document.visibilityState === "visible" && Date.now() - this.#lastInput < this.#idleAfterMs;
  }

  active(): boolean {
    return this.localActive() || Date.now() - this.#lastPoke < this.#idleAfterMs;
  }

  /** poke records activity reported by another tab. */
  poke(): void {
    const before = this.active();
    this.#lastPoke = Date.now();
    if (!before) this.#changed();
    else this.#schedule();
  }

  onChange(fn: () => void): () => void {
    this.#listeners.add(fn);
    return () => this.#listeners.delete(fn);
  }

  dispose(): void {
    clearTimeout(this.#timer);
    for (const t of inputEvents) window.removeEventListener(t, this.#onInput, { capture: true });
    document.removeEventListener("visibilitychange", this.#onVisibility);
    this.#listeners.clear();
  }

  #changed(): void {
    this.#wasActive = this.active();
    this.#schedule();
    for (const fn of [...this.#listeners]) fn();
  }

  // #schedule arms a timer for the moment activity expires.
  #schedule(): void {
    clearTimeout(this.#timer);
    const until = Math.max(this.#lastInput, this.#lastPoke) + this.#idleAfterMs - Date.now();
    if (until <= 0) {
      if (this.#wasActive !== this.active()) this.#changed();
      return;
    }
    this.#timer = setTimeout(() => {
      if (this.#wasActive !== this.active()) this.#changed();
      else this.#schedule();
    }, until + 5);
  }
}

/** A message between the tabs of one subscription. */
export type TabMessage =
  | { t: "events"; events: unknown[]; cursor: string }
  | { t: "reset" }
  | { t: "transport"; name: string }
  | { t: "hello" }
  | { t: "active" };

/**
 * leadTabs runs lead() in one tab of the origin at a time (a Web Lock named name); the
 * others wait for the lock and receive what the leader posts on the BroadcastChannel of
 * the same name. When the leader's tab closes, the browser releases its lock and the next
 * waiting tab leads. It returns a function that posts to the other tabs; aborting signal
 * leaves the channel and the lock (or its queue). Failures other than the abort go to onError.
 */
export function leadTabs(name: string, lead: () => Promise<void>, onMessage: (m: TabMessage) => void,
  signal: AbortSignal, onError: (err: unknown) => void): { post(m: TabMessage): void } {
  const channel = new BroadcastChannel(name);
  channel.onmessage = (e: MessageEvent<TabMessage>) => onMessage(e.data);
  signal.addEventListener("abort", () => channel.close(), { once: true });
  navigator.locks.request(name, { signal }, async () => {
    if (!signal.aborted) await lead();
  }).catch((err: unknown) => {
    if ((err as { name?: string }).name !== "AbortError") onError(err);
  });
  return {
    post: (m) => {
      if (!signal.aborted) channel.postMessage(m);
    },
  };
}
