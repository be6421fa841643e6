/**
 * Leading-edge coalescing of watch events (issue #10 item 3). A change that arrives when
 * nothing was flushed for `coalesceMs` is flushed at once: a lone change waits for no
 * window. Changes arriving within `coalesceMs` of a flush are batched: flushed `coalesceMs`
 * after the last of them, and at most `maxBatchDelayMs` after the first, so a burst becomes a
 * few updates and a steady stream still flushes regularly. (Further batching happens in the
 * daemon: changes arriving while a pass runs go into the next pass.)
 */

/** The clock and timers, replaceable in tests. */
export interface CoalesceClock {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

const realClock: CoalesceClock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
};

export interface CoalescerOptions {
  /** Quiet period that makes the next change go at once; also the trailing wait of a batch. */
  coalesceMs: number;
  /** A batch is flushed at most this long after its first change. */
  maxBatchDelayMs: number;
  /** Called with the number of changes flushed. */
  flush: (changes: number) => void;
  clock?: CoalesceClock;
}

export class Coalescer {
  readonly #o: CoalescerOptions;
  readonly #clock: CoalesceClock;
  #pending = 0;
  #batchStart: number | null = null;
  #timer: unknown = null;
  #lastFlush = Number.NEGATIVE_INFINITY;

  constructor(o: CoalescerOptions) {
    this.#o = o;
    this.#clock = o.clock ?? realClock;
  }

  /** `n` changes arrived. */
  add(n: number): void {
    this.#pending += n;
    const now = this.#clock.now();
    if (this.#timer === null && now - this.#lastFlush >= this.#o.coalesceMs) {
      this.#fire();
      return;
    }
    this.#batchStart ??= now;
    this.#clearTimer();
    const wait = Math.max(0, Math.min(this.#o.coalesceMs, this.#batchStart + this.#o.maxBatchDelayMs - now));
    this.#timer = this.#clock.setTimeout(() => {
      this.#timer = null;
      this.#fire();
    }, wait);
  }

  /** Stops a scheduled flush; the changes stay counted (see `take`). */
  cancel(): void {
    this.#clearTimer();
    this.#batchStart = null;
  }

  /** Stops a scheduled flush and returns the changes not flushed yet. */
  take(): number {
    this.cancel();
    const n = this.#pending;
    this.#pending = 0;
    return n;
  }

  #fire(): void {
    this.#batchStart = null;
    const n = this.#pending;
    this.#pending = 0;
    this.#lastFlush = this.#clock.now();
    this.#o.flush(n);
  }

  #clearTimer(): void {
    if (this.#timer !== null) this.#clock.clearTimeout(this.#timer);
    this.#timer = null;
  }
}
