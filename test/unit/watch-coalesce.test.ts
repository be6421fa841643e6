/** Leading-edge coalescing with a fake clock: a lone change goes at once, bursts are batched and bounded. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Coalescer, type CoalesceClock } from '../../src/watch/coalesce.js';

class FakeClock implements CoalesceClock {
  t = 1000;
  #timers = new Map<number, { at: number; fn: () => void }>();
  #seq = 0;
  now(): number {
    return this.t;
  }
  setTimeout(fn: () => void, ms: number): unknown {
    const id = ++this.#seq;
    this.#timers.set(id, { at: this.t + ms, fn });
    return id;
  }
  clearTimeout(h: unknown): void {
    this.#timers.delete(h as number);
  }
  advance(ms: number): void {
    const end = this.t + ms;
    for (;;) {
      const next = [...this.#timers].sort((a, b) => a[1].at - b[1].at)[0];
      if (!next || next[1].at > end) break;
      this.#timers.delete(next[0]);
      this.t = next[1].at;
      next[1].fn();
    }
    this.t = end;
  }
  get pending(): number {
    return this.#timers.size;
  }
}

function setup(coalesceMs = 5, maxBatchDelayMs = 100) {
  const clock = new FakeClock();
  const flushes: Array<{ at: number; n: number }> = [];
  const c = new Coalescer({ coalesceMs, maxBatchDelayMs, clock, flush: (n) => flushes.push({ at: clock.t, n }) });
  return { clock, flushes, c };
}

test('a lone change is flushed at once, with no timer', () => {
  const { clock, flushes, c } = setup();
  c.add(1);
  assert.deepEqual(flushes, [{ at: 1000, n: 1 }]);
  assert.equal(clock.pending, 0);
  clock.advance(50);
  c.add(2); // quiet for longer than coalesceMs: at once again
  assert.deepEqual(flushes, [{ at: 1000, n: 1 }, { at: 1050, n: 2 }]);
});

test('changes right after a flush are batched and flushed coalesceMs after the last one', () => {
  const { clock, flushes, c } = setup(5, 100);
  c.add(1);
  clock.advance(1);
  c.add(1);
  clock.advance(2);
  c.add(3);
  assert.equal(flushes.length, 1, 'batched, not flushed yet');
  clock.advance(5);
  assert.deepEqual(flushes, [{ at: 1000, n: 1 }, { at: 1008, n: 4 }]);
});

test('a steady stream still flushes at most maxBatchDelayMs after the first change of a batch', () => {
  const { clock, flushes, c } = setup(50, 100);
  for (let i = 0; i < 100; i++) {
    c.add(1);
    clock.advance(10);
  }
  clock.advance(100);
  assert.equal(flushes.reduce((s, f) => s + f.n, 0), 100, 'every change flushed once');
  assert.ok(flushes.length >= 9 && flushes.length <= 12, `${flushes.length} flushes`);
  for (let i = 1; i < flushes.length - 1; i++) assert.ok(flushes[i]!.at - flushes[i - 1]!.at <= 110, 'bounded batch');
});

test('take() returns what was not flushed and cancels the flush', () => {
  const { clock, flushes, c } = setup();
  c.add(1);
  c.add(2);
  assert.equal(c.take(), 2);
  clock.advance(100);
  assert.equal(flushes.length, 1);
});
