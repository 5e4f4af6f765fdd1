import type { components } from "./schema.js";

/** An RFC 9457 problem, as every Tocsin error is answered. */
export type Problem = components["schemas"]["Problem"];

/**
 * TocsinError is thrown (or passed to onError) when a request fails. `status` is the HTTP
 * status (0 for a network failure), `problem` the server's problem detail when it sent
 * one, and `retryAfterMs` the server's `Retry-After` (429/503) in milliseconds.
 */
export class TocsinError extends Error {
  readonly status: number;
  readonly problem: Problem | undefined;
  readonly retryAfterMs: number | undefined;

  constructor(message: string, status: number, problem?: Problem, retryAfterMs?: number, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "TocsinError";
    this.status = status;
    this.problem = problem;
    this.retryAfterMs = retryAfterMs;
  }

  /** The problem's slug (`cursor-expired`, `token-invalid`, …), when there is one. */
  get slug(): string | undefined {
    return this.problem?.type.split("/").pop();
  }
}

/** retryAfterMs parses a `Retry-After` header (seconds or an HTTP date) into milliseconds. */
export function retryAfterMs(header: string | null | undefined, now = Date.now()): number | undefined {
  if (header == null || header.trim() === "") return undefined;
  const seconds = Number(header);
  if (Number.isFinite(seconds)) return Math.max(0, seconds * 1000);
  const at = Date.parse(header);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}

/** errorFrom builds a TocsinError from a failed response and its (parsed) body. */
export function errorFrom(what: string, response: Response, body: unknown): TocsinError {
  const problem = isProblem(body) ? body : undefined;
  const detail = problem ? `${problem.title}: ${problem.detail}` : `HTTP ${response.status}`;
  return new TocsinError(`${what}: ${detail}`, response.status, problem, retryAfterMs(response.headers.get("Retry-After")));
}

function isProblem(v: unknown): v is Problem {
  return typeof v === "object" && v !== null && typeof (v as Problem).type === "string" && typeof (v as Problem).status === "number";
}
