import createFetchClient from "openapi-fetch";
import type { paths } from "./schema.js";
import { TocsinError, errorFrom } from "./errors.js";
import type { BackoffConfig } from "./backoff.js";
import { subscribe, type SubscribeOptions, type Subscription } from "./subscription.js";
import type {
  Capabilities, FeedPage, InboxCounts, InboxMarkResult, InboxPage, InboxSelection,
  PublishRequest, PublishResult, StreamTicket,
} from "./types.js";

/** Options of createClient. */
export interface ClientOptions {
  /** Where Tocsin is served, e.g. `https://tocsin.example.edu` (no trailing `/v1`). */
  baseUrl: string;
  /**
   * getToken returns the caller's bearer token (a JWT). It is called for the first request
   * and again after any `401`, so a refreshed token is picked up without a restart.
   */
  getToken: () => string | Promise<string>;
  /** The fetch to use. Default: the global fetch. */
  fetch?: typeof globalThis.fetch;
  /**
   * How streams authenticate: `"ticket"` (a single-use ticket in the URL, what browsers
   * need) or `"header"` (`Authorization: Bearer`). Default: ticket in browsers, header
   * elsewhere.
   */
  streamAuth?: "ticket" | "header";
  /** Bounds of the retry backoff (full jitter). */
  backoff?: BackoffConfig;
}

/** Options of one request. */
export interface RequestOptions {
  signal?: AbortSignal;
}

/** The parameters of `feed`. */
export interface FeedParams {
  /** The cursor to read after; `"now"` for what comes next; omitted: the oldest retained entry. */
  after?: string;
  /** At most this many events (1–1000, default 100). */
  limit?: number;
  /** Seconds to wait for a first event (long polling); 0 answers at once. */
  wait?: number;
}

/** A Tocsin client. Build it with createClient. */
export interface Client {
  readonly baseUrl: string;
  /** One page of the caller's feed (short polling, or long polling with `wait`). */
  feed(params?: FeedParams, opts?: RequestOptions): Promise<FeedPage>;
  /**
   * Follows the caller's feed: every event exactly once, in order, over the best transport
   * available (SSE → long poll → short poll), resuming from the last cursor.
   */
  subscribe(opts: SubscribeOptions): Subscription;
  readonly inbox: {
    list(params?: { state?: "unread" | "unseen" | "all" | "archived"; limit?: number; before?: string }, opts?: RequestOptions): Promise<InboxPage>;
    counts(opts?: RequestOptions): Promise<InboxCounts>;
    markRead(sel: InboxSelection, opts?: RequestOptions): Promise<InboxMarkResult>;
    markSeen(sel: InboxSelection, opts?: RequestOptions): Promise<InboxMarkResult>;
    archive(sel: InboxSelection, opts?: RequestOptions): Promise<InboxMarkResult>;
  };
  /** Publishes a message; the same idempotencyKey makes a retry publish nothing more. */
  publish(message: PublishRequest, opts?: RequestOptions & { idempotencyKey?: string }): Promise<PublishResult>;
  /** What the deployment offers now (push on or off, heartbeat, poll intervals). No token needed. */
  capabilities(opts?: RequestOptions): Promise<Capabilities>;
  /** A single-use ticket to open the stream without an Authorization header. */
  streamTicket(opts?: RequestOptions): Promise<StreamTicket>;
  /** The current bearer token (from getToken, cached until a 401). */
  token(): Promise<string>;
  /** Forgets the cached token: the next request calls getToken again. */
  invalidateToken(): void;
  /** @internal */
  readonly options: Readonly<ClientOptions>;
}

/** createClient returns a client of the Tocsin at baseUrl. */
export function createClient(options: ClientOptions): Client {
  const baseUrl = options.baseUrl.replace(/\/+$/, "");
  const baseFetch = options.fetch ?? globalThis.fetch.bind(globalThis);
  let cached: Promise<string> | undefined;
  const token = () => (cached ??= Promise.resolve().then(options.getToken));
  const invalidateToken = () => { cached = undefined; };

  // Every request carries the token; a 401 fetches a new token and retries once.
  const authFetch = async (input: Request): Promise<Response> => {
    const retry = input.clone();
    const sent = await token();
    input.headers.set("Authorization", `Bearer ${sent}`);
    const res = await baseFetch(input);
    if (res.status !== 401) return res;
    if (cached && (await cached) === sent) invalidateToken();
    const fresh = await token();
    retry.headers.set("Authorization", `Bearer ${fresh}`);
    return baseFetch(retry);
  };
  const api = createFetchClient<paths>({ baseUrl, fetch: authFetch });
  const open = createFetchClient<paths>({ baseUrl, fetch: baseFetch }); // capabilities: no token

  async function call<T>(what: string, p: Promise<{ data?: T; error?: unknown; response: Response }>): Promise<T> {
    let r: { data?: T; error?: unknown; response: Response };
    try {
      r = await p;
    } catch (err) {
      if (isAbort(err)) throw err;
      throw new TocsinError(`${what}: ${String(err)}`, 0, undefined, undefined, { cause: err });
    }
    if (r.error !== undefined || !r.response.ok) throw errorFrom(what, r.response, r.error);
    return r.data as T;
  }

  const client: Client = {
    baseUrl,
    options,
    token,
    invalidateToken,
    feed: (params = {}, opts = {}) =>
      call("reading the feed", api.GET("/v1/feed", { params: { query: params }, signal: opts.signal })),
    subscribe: (opts) => subscribe(client, opts),
    inbox: {
      list: (params = {}, opts = {}) =>
        call("listing the inbox", api.GET("/v1/inbox", { params: { query: params }, signal: opts.signal })),
      counts: (opts = {}) => call("reading inbox counts", api.GET("/v1/inbox/counts", { signal: opts.signal })),
      markRead: (body, opts = {}) => call("marking read", api.POST("/v1/inbox/read", { body, signal: opts.signal })),
      markSeen: (body, opts = {}) => call("marking seen", api.POST("/v1/inbox/seen", { body, signal: opts.signal })),
      archive: (body, opts = {}) => call("archiving", api.POST("/v1/inbox/archive", { body, signal: opts.signal })),
    },
    publish: (message, opts = {}) =>
      call("publishing", api.POST("/v1/messages", {
        body: message,
        params: { header: opts.idempotencyKey ? { "Idempotency-Key": opts.idempotencyKey } : {} },
        signal: opts.signal,
      })),
    capabilities: (opts = {}) => call("reading capabilities", open.GET("/v1/capabilities", { signal: opts.signal })),
    streamTicket: (opts = {}) => call("getting a stream ticket", api.POST("/v1/stream-tickets", { signal: opts.signal })),
  };
  return client;
}

export function isAbort(err: unknown): boolean {
  return typeof err === "object" && err !== null && (err as { name?: string }).name === "AbortError";
}
