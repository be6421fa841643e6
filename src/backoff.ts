/**
 * The one retry-delay rule: exponential from `initialMs`, doubling per attempt up to
 * `maxMs`, with optional ± `jitter` (a fraction) so that many clients retrying after one
 * outage do not arrive in lockstep. Used by the etcd watcher, `register` and the managed
 * HAProxy restart.
 */
export interface BackoffOptions {
  /** Delay of attempt 0. Default 250 ms. */
  initialMs?: number;
  /** Upper bound before jitter. Default 5000 ms. */
  maxMs?: number;
  /** Spread as a fraction of the delay (0.2 = ±20 %). Default 0. */
  jitter?: number;
}

/** Delay before retry number `attempt` (0-based). */
export function backoffDelay(attempt: number, opts: BackoffOptions = {}): number {
  const initial = opts.initialMs ?? 250;
  const base = Math.min(opts.maxMs ?? 5000, initial * 2 ** Math.max(0, attempt));
  const jitter = opts.jitter ?? 0;
  return jitter > 0 ? Math.round(base * (1 - jitter + Math.random() * 2 * jitter)) : base;
}

/** The same rule with the attempt count kept: `next()` doubles, `reset()` starts over. */
export class Backoff {
  readonly #opts: BackoffOptions;
  #attempt = 0;

  constructor(opts: BackoffOptions = {}) {
    this.#opts = opts;
  }

  /** The delay before the next retry; each call doubles the following one (up to maxMs). */
  next(): number {
    return backoffDelay(this.#attempt++, this.#opts);
  }

  /** After a success: the next delay is `initialMs` again. */
  reset(): void {
    this.#attempt = 0;
  }
}
