import type { Event, InboxCounts } from "./types.js";

/**
 * fold returns entries (newest first) with events (oldest first, as delivered) folded in:
 * each event goes on top, a digest that `replaces` an earlier one takes its place, an id
 * already shown is not shown twice, and `inbox` entries (state changes) are left out.
 */
export function fold<E extends { id: string }>(entries: readonly E[], events: readonly Event[], map: (e: Event) => E): E[] {
  let out = [...entries];
  for (const e of events) {
    if (e.kind === "inbox") continue;
    out = out.filter((x) => x.id !== e.id && x.id !== e.replaces);
    out.unshift(map(e));
  }
  return out;
}

/**
 * InboxCounter keeps the unread and unseen counts of one user in agreement in every tab
 * and device: `inbox` entries carry the exact counts as of their place in the feed (the
 * same place in every tab), and each new notification, message or digest adds one. A
 * digest that `replaces` another does not add to unread; its unseen effect is unknown, so
 * the counter asks `refetch` for the exact counts.
 */
export class InboxCounter {
  #counts: InboxCounts;
  readonly #onChange: (c: InboxCounts) => void;
  readonly #refetch: (() => Promise<InboxCounts>) | undefined;

  constructor(initial: InboxCounts, onChange: (c: InboxCounts) => void, refetch?: () => Promise<InboxCounts>) {
    this.#counts = { ...initial };
    this.#onChange = onChange;
    this.#refetch = refetch;
  }

  get counts(): InboxCounts {
    return { ...this.#counts };
  }

  /** set replaces the counts (after a markRead answer or a refetch). */
  set(c: InboxCounts): void {
    this.#counts = { ...c };
    this.#onChange(this.counts);
  }

  /** apply folds delivered events into the counts. */
  apply(events: readonly Event[]): void {
    let changed = false;
    let refetch = false;
    for (const e of events) {
      if (e.kind === "inbox") {
        this.#counts = { ...e.data.counts };
        changed = true;
      } else if (e.kind === "digest" && e.replaces) {
        refetch = true;
      } else if (e.kind === "notification" || e.kind === "message" || e.kind === "digest") {
        this.#counts = { unread: this.#counts.unread + 1, unseen: this.#counts.unseen + 1 };
        changed = true;
      }
    }
    if (changed) this.#onChange(this.counts);
    if (refetch && this.#refetch) this.#refetch().then((c) => this.set(c), () => {});
  }
}
