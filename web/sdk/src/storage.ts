/**
 * CursorStorage persists a subscription's cursor, so that a resumed subscription (a page
 * reload, a restarted process, another tab taking over) starts where the last one stopped.
 * It may be synchronous or asynchronous. In browsers the default is `localStorage`; in Node
 * it is memory (pass your own to persist across restarts).
 */
export interface CursorStorage {
  get(key: string): string | null | undefined | Promise<string | null | undefined>;
  set(key: string, cursor: string): void | Promise<void>;
  remove(key: string): void | Promise<void>;
}

/** memoryStorage keeps cursors in this process only. */
export function memoryStorage(): CursorStorage {
  const m = new Map<string, string>();
  return {
    get: (k) => m.get(k),
    set: (k, v) => void m.set(k, v),
    remove: (k) => void m.delete(k),
  };
}
