import { EventSource } from "eventsource";
import { retryAfterMs } from "../errors.js";
import type { Event } from "../types.js";

/** How one stream connection ended. */
export type StreamOutcome =
  /** The caller aborted it (close, idle). */
  | { kind: "closed" }
  /** Push is off: a `204`, or `event: push-disabled`. */
  | { kind: "push-off" }
  /** The server asked for a reconnection (`event: reconnect`: lifetime, shutdown, token expiry…). */
  | { kind: "reconnect"; reason: string }
  /** Nothing at all, not even a heartbeat, for twice the heartbeat interval (a buffering proxy). */
  | { kind: "silent" }
  /** The connection failed: an HTTP status (0: network), whether it had opened, Retry-After. */
  | { kind: "failed"; status: number; opened: boolean; retryAfterMs: number | undefined; message: string };

/** What openStream needs. */
export interface StreamParams {
  /** The stream's full URL, `after` (and `ticket`) included. */
  url: string;
  /** Extra request headers (Authorization when the stream authenticates by header). */
  headers?: Record<string, string>;
  /** The advertised heartbeat; a stream silent for twice as long is abandoned. */
  heartbeatMs: number;
  /** Aborting it closes the stream (outcome "closed"). */
  signal: AbortSignal;
  /** Called with each event, in order. */
  onEvent(e: Event): void;
  /** Called once the stream's headers arrived with 200. */
  onOpen?(): void;
  /**
   * Called with the id of a frame that carries no event: the stream's opening `id:` (the
   * concrete cursor of `after=now`), so that a reconnection before any event resumes there.
   */
  onCursor?(cursor: string): void;
  fetch?: typeof globalThis.fetch;
}

/** The frame types that carry an event; their `data` is the Event JSON. */
const eventKinds = ["notification", "change", "message", "digest", "inbox"] as const;

/**
 * openStream holds one Server-Sent Events connection until it ends, and says how it ended.
 * It reads through the `eventsource` package's EventSource (the browser's API, on fetch) so
 * that it sees what a native EventSource hides: the response status, `Retry-After`, and
 * every byte, heartbeat comments included, which is how a silent stream is told from a
 * quiet one. It never reconnects by itself: a ticket is single-use, and the subscription
 * decides what comes next.
 */
export function openStream(p: StreamParams): Promise<StreamOutcome> {
  return new Promise((resolve) => {
    let status = 0;
    let retryAfter: number | undefined;
    let opened = false;
    let done = false;
    let silence: ReturnType<typeof setTimeout> | undefined;
    const baseFetch = p.fetch ?? globalThis.fetch.bind(globalThis);

    const finish = (o: StreamOutcome) => {
      if (done) return;
      done = true;
      clearTimeout(silence);
      p.signal.removeEventListener("abort", onAbort);
      es.close();
      resolve(o);
    };
    const arm = () => {
      clearTimeout(silence);
      silence = setTimeout(() => finish({ kind: "silent" }), 2 * p.heartbeatMs);
    };
    const onAbort = () => finish({ kind: "closed" });

    const observingFetch = async (url: string | URL, init?: RequestInit): Promise<Response> => {
      const res = await baseFetch(url, { ...init, headers: { ...(init?.headers as Record<string, string>), ...p.headers } });
      status = res.status;
      retryAfter = retryAfterMs(res.headers.get("Retry-After"));
      if (res.status !== 200 || !res.body) return res;
      opened = true;
      arm();
      p.onOpen?.();
      const frames = new FrameIds((id) => p.onCursor?.(id));
      const body = res.body.pipeThrough(new TransformStream<Uint8Array, Uint8Array>({
        transform(chunk, ctl) {
          arm(); // any byte, a heartbeat comment included, proves the stream alive
          frames.feed(chunk);
          ctl.enqueue(chunk);
        },
      }));
      return new Response(body, { status: res.status, statusText: res.statusText, headers: res.headers });
    };

    const es = new EventSource(p.url, { fetch: observingFetch as never });
    arm(); // headers held back by a proxy count as silence too
    const onFrame = (m: MessageEvent<string>) => {
      if (done) return; // frames of a chunk already read are dispatched after close()
      p.onEvent(JSON.parse(m.data) as Event);
    };
    for (const kind of eventKinds) es.addEventListener(kind, onFrame);
    es.addEventListener("push-disabled", () => finish({ kind: "push-off" }));
    es.addEventListener("reconnect", (m: MessageEvent<string>) => {
      let reason = "unknown";
      try { reason = (JSON.parse(m.data) as { reason?: string }).reason ?? reason; } catch { /* keep unknown */ }
      finish({ kind: "reconnect", reason });
    });
    es.addEventListener("error", (e) => {
      if (status === 204) return finish({ kind: "push-off" });
      const message = (e as { message?: string }).message ?? "stream error";
      finish({ kind: "failed", status: opened ? 0 : status, opened, retryAfterMs: retryAfter, message });
    });
    if (p.signal.aborted) onAbort();
    else p.signal.addEventListener("abort", onAbort);
  });
}

/**
 * FrameIds scans the raw stream for frames that set an id without carrying data (an
 * EventSource dispatches nothing for them, yet they move the resume point).
 */
class FrameIds {
  readonly #decoder = new TextDecoder();
  readonly #onId: (id: string) => void;
  #partial = "";
  #id: string | undefined;
  #data = false;

  constructor(onId: (id: string) => void) {
    this.#onId = onId;
  }

  feed(chunk: Uint8Array): void {
    const lines = (this.#partial + this.#decoder.decode(chunk, { stream: true })).split("\n");
    this.#partial = lines.pop() ?? "";
    for (const raw of lines) {
      const line = raw.endsWith("\r") ? raw.slice(0, -1) : raw;
      if (line === "") {
        if (this.#id !== undefined && !this.#data) this.#onId(this.#id);
        this.#id = undefined;
        this.#data = false;
      } else if (line.startsWith("id:")) {
        this.#id = line.slice(line.startsWith("id: ") ? 4 : 3);
      } else if (line.startsWith("data:")) {
        this.#data = true;
      }
    }
  }
}
