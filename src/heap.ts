/**
 * Gives the memory of a large pass back to the OS. A pass over 10 000 upstreams allocates
 * ~100 MiB that lives just long enough (across the socket's awaits) to be promoted to V8's
 * old space, where it stays as garbage until the old generation's next limit: measured at
 * 1000 x 10, 89 MiB of old space in use right after the sync, 23 MiB live. One full GC
 * right after such a pass returns those pages (see bench/README.md). Small passes never
 * trigger it: V8's own scheduling is right for them.
 */
import v8 from 'node:v8';
import { runInNewContext } from 'node:vm';
import { logger } from './log.js';

const log = logger('heap');

/** Runtime operations from which a pass counts as large. */
export const LARGE_PASS_OPS = 1000;

type Gc = () => void;
let gc: Gc | null | undefined;

function collector(): Gc | null {
  if (gc === undefined) {
    try {
      // The documented way to reach V8's gc() without starting node with --expose-gc.
      v8.setFlagsFromString('--expose-gc');
      gc = runInNewContext('gc') as Gc;
    } catch (err) {
      log.debug({ err }, 'gc() unavailable; large passes keep their garbage until V8 collects it');
      gc = null;
    }
  }
  return gc;
}

let scheduled = false;

/** After a pass of `ops` runtime operations: one full GC on the next turn when it was large. */
export function afterPass(ops: number): void {
  if (ops < LARGE_PASS_OPS || scheduled) return;
  scheduled = true;
  setImmediate(() => {
    scheduled = false;
    const started = performance.now();
    // Plain gc(): a full mark-compact; V8 unmaps the freed pages shortly after (in a test,
    // 281 → 96 MiB RSS within 1 s). Node 20's gc({... flavor: 'last-resort'}) collected nothing.
    collector()?.();
    log.debug({ ops, ms: Math.round(performance.now() - started) }, 'full GC after a large pass');
  }).unref();
}
