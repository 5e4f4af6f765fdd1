import type { components } from "./schema.js";

type Schemas = components["schemas"];

/**
 * Event is one entry of the caller's feed. It narrows by `kind`: a `digest` carries
 * `DigestData`, an `inbox` entry carries `InboxData`, a `notification` or `change` the
 * row's allow-listed columns (or null), a `message` any JSON value.
 */
export type Event = Schemas["Event"];
export type EventKind = Schemas["EventKind"];
export type DigestData = Schemas["DigestData"];
export type InboxData = Schemas["InboxData"];
export type FeedPage = Schemas["FeedPage"];
export type InboxEntry = Schemas["InboxEntry"];
export type InboxPage = Schemas["InboxPage"];
export type InboxCounts = Schemas["InboxCounts"];
export type InboxMarkResult = Schemas["InboxMarkResult"];
/** Either `{ ids }` or `{ up_to }`, never both. */
export type InboxSelection = Schemas["InboxSelection"];
export type PublishRequest = Schemas["PublishRequest"];
export type PublishResult = Schemas["PublishResult"];
export type Capabilities = Schemas["Capabilities"];
export type StreamTicket = Schemas["StreamTicket"];

/** The transport a subscription uses right now. */
export type TransportName = "sse" | "long-poll" | "short-poll";
