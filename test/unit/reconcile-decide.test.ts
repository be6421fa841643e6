/**
 * The reload decision table (src/reconcile/decide.ts): now / later / none, the reasons it
 * carries (typed, `settings` among them) and the state it hands back to the daemon.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decideReload, recordFailedReload, SETTINGS_REASON, type DecideInput, type ReloadReason } from '../../src/reconcile/index.js';

const urgent: ReloadReason = { kind: 'service-added', backend: 'http-a', detail: 'new', urgent: true };
const deferred: ReloadReason = { kind: 'capacity', backend: 'http-b', detail: 'overflow', urgent: false };

const NOW = 100_000;
function input(o: Partial<DecideInput> & { reasons?: ReloadReason[] } = {}): DecideInput {
  const reasons = o.reasons ?? [];
  return {
    plan: { reasons, reload: reasons.some((r) => r.urgent) },
    settingsChanged: false,
    now: NOW,
    deferredSince: 0,
    consolidateAfterMs: 60_000,
    nextAllowedAt: NOW,
    refusedConfig: null,
    desiredConfig: () => 'cfg-1',
    ...o,
  };
}

test('decideReload: table', () => {
  const rows: Array<{ name: string; in: DecideInput; want: string; kinds: string[]; deferredSince: number; refused: string | null }> = [
    { name: 'nothing wanted', in: input(), want: 'none/not-needed', kinds: [], deferredSince: 0, refused: null },
    { name: 'urgent reason, limit open', in: input({ reasons: [urgent] }), want: 'now', kinds: ['service-added'], deferredSince: NOW, refused: null },
    { name: 'urgent reason, rate-limited', in: input({ reasons: [urgent], nextAllowedAt: NOW + 700 }), want: 'later/700', kinds: ['service-added'], deferredSince: NOW, refused: null },
    { name: 'settings changed alone', in: input({ settingsChanged: true }), want: 'now', kinds: ['settings'], deferredSince: 0, refused: null },
    { name: 'settings ride with urgent reasons', in: input({ reasons: [urgent], settingsChanged: true }), want: 'now', kinds: ['service-added', 'settings'], deferredSince: NOW, refused: null },
    { name: 'non-urgent, just deferred', in: input({ reasons: [deferred] }), want: 'none/deferred', kinds: ['capacity'], deferredSince: NOW, refused: null },
    { name: 'non-urgent, waiting < consolidate', in: input({ reasons: [deferred], deferredSince: NOW - 59_999 }), want: 'none/deferred', kinds: ['capacity'], deferredSince: NOW - 59_999, refused: null },
    { name: 'non-urgent, waited ≥ consolidate', in: input({ reasons: [deferred], deferredSince: NOW - 60_000 }), want: 'now', kinds: ['capacity'], deferredSince: NOW - 60_000, refused: null },
    { name: 'consolidate off (0)', in: input({ reasons: [deferred], deferredSince: 1, consolidateAfterMs: 0 }), want: 'none/deferred', kinds: ['capacity'], deferredSince: 1, refused: null },
    { name: 'non-urgent ride with an urgent one', in: input({ reasons: [urgent, deferred] }), want: 'now', kinds: ['service-added', 'capacity'], deferredSince: NOW, refused: null },
    { name: 'same config refused before', in: input({ reasons: [urgent], refusedConfig: 'cfg-1' }), want: 'none/refused', kinds: ['service-added'], deferredSince: NOW, refused: 'cfg-1' },
    { name: 'another config refused before', in: input({ reasons: [urgent], refusedConfig: 'cfg-0' }), want: 'now', kinds: ['service-added'], deferredSince: NOW, refused: 'cfg-0' },
    { name: 'refusal forgotten once nothing asks for a reload', in: input({ refusedConfig: 'cfg-1' }), want: 'none/not-needed', kinds: [], deferredSince: 0, refused: null },
    { name: 'refusal forgotten, consolidation goes ahead', in: input({ reasons: [deferred], deferredSince: 1, refusedConfig: 'cfg-1' }), want: 'now', kinds: ['capacity'], deferredSince: 1, refused: null },
  ];
  for (const r of rows) {
    const out = decideReload(r.in);
    const d = out.decision;
    const got = d.action === 'none' ? `none/${d.why}` : d.action === 'later' ? `later/${d.afterMs}` : 'now';
    assert.equal(got, r.want, r.name);
    assert.deepEqual(d.reasons.map((x) => x.kind), r.kinds, `${r.name}: reasons`);
    assert.equal(out.deferredSince, r.deferredSince, `${r.name}: deferredSince`);
    assert.equal(out.refusedConfig, r.refused, `${r.name}: refusedConfig`);
  }
});

test('decideReload: the desired config is rendered only when a reload would go ahead now', () => {
  let renders = 0;
  const desiredConfig = () => {
    renders++;
    return 'cfg';
  };
  decideReload(input({ reasons: [deferred], desiredConfig }));
  decideReload(input({ reasons: [urgent], nextAllowedAt: NOW + 1, desiredConfig }));
  assert.equal(renders, 0);
  const d = decideReload(input({ reasons: [urgent], desiredConfig })).decision;
  assert.equal(renders, 1);
  assert.equal(d.action === 'now' && d.config, 'cfg');
});

test('decideReload: reasons stay typed objects (settings is a kind, not a string to split)', () => {
  const d = decideReload(input({ reasons: [urgent], settingsChanged: true })).decision;
  assert.deepEqual(d.reasons, [urgent, SETTINGS_REASON]);
  assert.equal(SETTINGS_REASON.backend, null);
});

test('decideReload: a config that failed at the master waits out its backoff; another config goes at once', () => {
  const failed = { config: 'cfg-1', attempts: 1, retryAt: NOW + 2000, message: 'master reports failed: 1' };
  const same = decideReload(input({ reasons: [urgent], failed }));
  assert.deepEqual([same.decision.action, same.decision.action === 'later' && same.decision.afterMs, same.decision.action === 'later' && same.decision.backoff], ['later', 2000, true]);
  assert.equal(same.failed, failed, 'the memory is carried');
  const due = decideReload(input({ reasons: [urgent], failed, now: NOW + 2000, nextAllowedAt: NOW }));
  assert.equal(due.decision.action, 'now', 'backoff over: tried again');
  const other = decideReload(input({ reasons: [urgent], failed, desiredConfig: () => 'cfg-2' }));
  assert.equal(other.decision.action, 'now', 'a changed config may be the fix');
  const idle = decideReload(input({ failed }));
  assert.equal(idle.failed, null, 'forgotten once nothing asks for a reload');
});

test('recordFailedReload: doubles per consecutive failure from initialMs up to maxMs', () => {
  let f = null as ReturnType<typeof recordFailedReload> | null;
  const delays: number[] = [];
  for (let i = 0; i < 10; i++) {
    f = recordFailedReload(f, 'cfg', 'failed', 1000 * i, { initialMs: 2000, maxMs: 60_000 });
    delays.push(f.retryAt - 1000 * i);
  }
  assert.deepEqual(delays, [2000, 4000, 8000, 16_000, 32_000, 60_000, 60_000, 60_000, 60_000, 60_000]);
  assert.equal(f!.attempts, 10);
  // Over ten minutes of a master that always fails, fixed 1 s retries make ~600 attempts.
  let t = 0;
  let n = 0;
  let mem: ReturnType<typeof recordFailedReload> | null = null;
  while (t < 600_000) {
    n++;
    mem = recordFailedReload(mem, 'cfg', 'failed', t);
    t = mem.retryAt;
  }
  assert.ok(n <= 10, `${n} attempts in 10 min with the default backoff`);
});
