/**
 * @tocsin/client — Tocsin's client for browsers and Node 20.
 *
 * `createClient({ baseUrl, getToken })` gives typed calls of the REST API and
 * `subscribe`, which follows the caller's feed over SSE, long polling or short polling —
 * whichever works — delivering every event exactly once, in order, from a persisted cursor.
 */
export { createClient, type Client, type ClientOptions, type FeedParams, type RequestOptions } from "./client.js";
export type { SubscribeOptions, Subscription } from "./subscription.js";
export type { Activity } from "./ladder.js";
export { TocsinError, type Problem } from "./errors.js";
export { memoryStorage, type CursorStorage } from "./storage.js";
export { backoffMs, type BackoffConfig } from "./backoff.js";
export { CursorLog } from "./cursor.js";
export { fold, InboxCounter } from "./view.js";
export type * from "./types.js";
export type { paths, components, operations } from "./schema.js";
