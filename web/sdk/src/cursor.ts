import type { Event } from "./types.js";

/** How many recent event ids a CursorLog remembers to drop duplicates. */
const rememberedIds = 5000;

/**
 * CursorLog is a subscription's only state: the cursor to resume from and the ids of
 * recent events. Every transport hands its events to accept, which drops the ones
 * already delivered (a transport change, a resent stream frame, a tab taking over) and
 * advances the cursor. Cursors are opaque: the log never compares or builds them.
 */
export class CursorLog {
  #cursor: string | undefined;
  readonly #seen = new Set<string>();
  readonly #order: string[] = [];

  constructor(cursor?: string) {
    this.#cursor = cursor;
  }

  /** The cursor to send as `after` next (undefined: from the oldest retained entry). */
  get cursor(): string | undefined {
    return this.#cursor;
  }

  /**
   * accept returns the events of a page that were not delivered before, in their order,
   * and moves the cursor to `cursor` (the page's cursor, or the last event's id).
   */
  accept(events: readonly Event[], cursor: string): Event[] {
    const fresh: Event[] = [];
    for (const e of events) {
      if (this.#seen.has(e.id)) continue;
      this.#remember(e.id);
      fresh.push(e);
    }
    this.#cursor = cursor;
    return fresh;
  }

  /** restart moves the cursor without delivering anything (after a 410: "now"). */
  restart(cursor: string): void {
    this.#cursor = cursor;
  }

  #remember(id: string): void {
    this.#seen.add(id);
    this.#order.push(id);
    if (this.#order.length > rememberedIds) {
      this.#seen.delete(this.#order.shift()!);
    }
  }
}
