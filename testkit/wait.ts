/** Waiting: sleeps and polls, both bounded, both ending early (rejecting) when `signal` aborts. */

/** Resolves after `ms`; rejects with the signal's reason when it aborts first. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

export interface WaitOptions {
  /** Default 10 000 ms. */
  timeoutMs?: number;
  /** Default 50 ms. */
  intervalMs?: number;
  /** Named in the timeout error. Default `condition`. */
  what?: string;
  /** Stop waiting (rejects with its reason). */
  signal?: AbortSignal;
}

/** Polls `fn` until it returns a truthy value; throws after `timeoutMs` (with the last error as cause). */
export async function waitFor<T>(fn: () => Promise<T> | T, { timeoutMs = 10_000, intervalMs = 50, what = 'condition', signal }: WaitOptions = {}): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastErr: unknown;
  for (;;) {
    signal?.throwIfAborted();
    try {
      const v = await fn();
      if (v) return v;
    } catch (err) {
      lastErr = err;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`, { cause: lastErr });
    }
    await sleep(intervalMs, signal);
  }
}

/** Like `waitFor`, but null on timeout (for callers that report a miss instead of failing). */
export async function until<T>(fn: () => Promise<T> | T, timeoutMs: number, intervalMs = 20): Promise<T | null> {
  return waitFor(fn, { timeoutMs, intervalMs }).catch(() => null);
}
