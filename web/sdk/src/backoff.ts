/** Backoff bounds for failed requests (full jitter, AWS architecture blog's "Exponential Backoff And Jitter"). */
export interface BackoffConfig {
  /** The first retry's upper bound. Default 500 ms. */
  baseMs?: number;
  /** The cap of the upper bound. Default 30 s. */
  capMs?: number;
}

/**
 * backoffMs returns how long to wait before retry number `attempt` (1 for the first retry):
 * a uniformly random duration between 0 and min(cap, base·2^(attempt−1)). Full jitter
 * spreads the reconnections of many clients after a shared failure.
 */
export function backoffMs(attempt: number, cfg: BackoffConfig = {}, random: () => number = Math.random): number {
  const base = cfg.baseMs ?? 500;
  const cap = cfg.capMs ?? 30_000;
  const ceiling = Math.min(cap, base * 2 ** Math.max(0, attempt - 1));
  return Math.floor(random() * ceiling);
}

/** sleep resolves after ms, or at once (without error) when signal aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
  });
}
