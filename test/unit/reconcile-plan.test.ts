import { test } from 'node:test';
import assert from 'node:assert/strict';
import { structureHash } from '../../src/model.js';
import { describePlan, plan, type ObservedState, type PlanContext } from '../../src/reconcile/index.js';
import {
  activeSlot,
  backend,
  backendOf,
  brief,
  ctx,
  dynServer,
  freeSlot,
  http,
  observed,
  reg,
  tcp,
  up,
} from './reconcile-helpers.js';

const A = 'http-a';
const NOW = 1_000_000;

/** Common starting point: service a with one upstream in s1 of 4 slots, domain a.example. */
const base = http('a', [up('u1', '10.0.0.1:80')], { domains: ['a.example'] });
const baseObs = (servers = [activeSlot(A, 1, '10.0.0.1:80')], hosts: Record<string, string> = { 'a.example': A }) =>
  observed([backendOf(base, 4, servers)], hosts);

interface Row {
  name: string;
  desired: ReturnType<typeof reg>;
  obs: ObservedState;
  ctx?: Partial<PlanContext>;
  ops: string[];
  reasons: string[];
  /** Concrete, not derived from the reasons: a row whose urgency flag is wrong fails here. */
  reload: boolean;
  pending?: boolean;
}

// Every row of design.md's change classification, plus the order rules of notes §1.
const rows: Row[] = [
  {
    name: 'no change: no ops, no reasons',
    desired: reg(base),
    obs: baseObs(),
    ops: [],
    reasons: [],
    reload: false,
    pending: false,
  },
  {
    name: 'upstream added: addr while in maint, then ready',
    desired: reg(http('a', [up('u1', '10.0.0.1:80'), up('u2', '10.0.0.2:80')], { domains: ['a.example'] })),
    obs: baseObs(),
    ops: [`set-addr ${A}/s2 10.0.0.2:80`, `set-state ${A}/s2 ready`],
    reasons: [],
    reload: false,
  },
  {
    name: 'upstream added, hold until healthy: drain, health down, ready after the address',
    desired: reg(http('a', [up('u1', '10.0.0.1:80'), up('u2', '10.0.0.2:80')], { domains: ['a.example'] })),
    obs: baseObs(),
    ctx: { holdUntilHealthy: true },
    ops: [`set-addr ${A}/s2 10.0.0.2:80`, `set-state ${A}/s2 drain`, `set-health ${A}/s2 down`, `set-state ${A}/s2 ready`],
    reasons: [],
    reload: false,
  },
  {
    name: 'upstream added with weight: weight set before leaving maint',
    desired: reg(http('a', [up('u1', '10.0.0.1:80'), up('u2', '10.0.0.2:80', { weight: 50 })], { domains: ['a.example'] })),
    obs: baseObs(),
    ops: [`set-addr ${A}/s2 10.0.0.2:80`, `set-weight ${A}/s2 50`, `set-state ${A}/s2 ready`],
    reasons: [],
    reload: false,
  },
  {
    name: 'upstream added in state maint: address only',
    desired: reg(http('a', [up('u1', '10.0.0.1:80'), up('u2', '10.0.0.2:80', { state: 'maint' })], { domains: ['a.example'] })),
    obs: baseObs(),
    ops: [`set-addr ${A}/s2 10.0.0.2:80`],
    reasons: [],
    reload: false,
  },
  {
    name: 'upstream added in state drain',
    desired: reg(http('a', [up('u1', '10.0.0.1:80'), up('u2', '10.0.0.2:80', { state: 'drain' })], { domains: ['a.example'] })),
    obs: baseObs(),
    ops: [`set-addr ${A}/s2 10.0.0.2:80`, `set-state ${A}/s2 drain`],
    reasons: [],
    reload: false,
  },
  {
    name: 'upstream removed: drain first, nothing else in this pass',
    desired: reg(http('a', [], { domains: ['a.example'] })),
    obs: baseObs([activeSlot(A, 1, '10.0.0.1:80', { scur: 0 })]),
    ops: [`set-state ${A}/s1 drain`],
    reasons: [],
    pending: true,
    reload: false,
  },
  {
    name: 'removal, draining with sessions before the timeout: no ops, still pending',
    desired: reg(http('a', [], { domains: ['a.example'] })),
    obs: baseObs([activeSlot(A, 1, '10.0.0.1:80', { drain: true, scur: 2 })]),
    ctx: { drainStartedAt: new Map([[`${A}/s1`, NOW - 9_999]]) },
    ops: [],
    pending: true,
    reasons: [],
    reload: false,
  },
  {
    name: 'removal, queue not empty: still waiting',
    desired: reg(http('a', [], { domains: ['a.example'] })),
    obs: baseObs([activeSlot(A, 1, '10.0.0.1:80', { drain: true, qcur: 1 })]),
    ctx: { drainStartedAt: new Map([[`${A}/s1`, NOW - 100]]) },
    ops: [],
    pending: true,
    reasons: [],
    reload: false,
  },
  {
    name: 'removal, drained (scur 0, qcur 0): maint, then address cleared',
    desired: reg(http('a', [], { domains: ['a.example'] })),
    obs: baseObs([activeSlot(A, 1, '10.0.0.1:80', { drain: true })]),
    ctx: { drainStartedAt: new Map([[`${A}/s1`, NOW - 100]]) },
    ops: [`set-state ${A}/s1 maint`, `set-addr ${A}/s1 0.0.0.0:1`],
    pending: false,
    reasons: [],
    reload: false,
  },
  {
    name: 'removal, drain timeout with sessions left: maint, address cleared, weight reset',
    desired: reg(http('a', [], { domains: ['a.example'] })),
    obs: baseObs([activeSlot(A, 1, '10.0.0.1:80', { drain: true, scur: 5, weight: 30 })]),
    ctx: { drainStartedAt: new Map([[`${A}/s1`, NOW - 10_000]]) },
    ops: [`set-state ${A}/s1 maint`, `set-addr ${A}/s1 0.0.0.0:1`, `set-weight ${A}/s1 1`],
    reasons: [],
    reload: false,
  },
  {
    name: 'removal interrupted after maint (restart): address cleared',
    desired: reg(http('a', [], { domains: ['a.example'] })),
    obs: baseObs([freeSlot(A, 1, { addr: '10.0.0.1', port: 80 })]),
    ops: [`set-addr ${A}/s1 0.0.0.0:1`],
    reasons: [],
    reload: false,
  },
  {
    name: 'address changed: new slot filled first, then the old one drains',
    desired: reg(http('a', [up('u1', '10.0.0.9:80')], { domains: ['a.example'] })),
    obs: baseObs([activeSlot(A, 1, '10.0.0.1:80'), activeSlot(A, 2, '10.0.0.2:80')]),
    ops: [`set-addr ${A}/s3 10.0.0.9:80`, `set-state ${A}/s3 ready`, `set-state ${A}/s1 drain`, `set-state ${A}/s2 drain`],
    pending: true,
    reasons: [],
    reload: false,
  },
  {
    name: 'weight changed',
    desired: reg(http('a', [up('u1', '10.0.0.1:80', { weight: 0 })], { domains: ['a.example'] })),
    obs: baseObs(),
    ops: [`set-weight ${A}/s1 0`],
    reasons: [],
    reload: false,
  },
  {
    name: 'state drain requested',
    desired: reg(http('a', [up('u1', '10.0.0.1:80', { state: 'drain' })], { domains: ['a.example'] })),
    obs: baseObs(),
    ops: [`set-state ${A}/s1 drain`],
    pending: false,
    reasons: [],
    reload: false,
  },
  {
    name: 'state drain by request with sessions: not a removal (no maint, no timer)',
    desired: reg(http('a', [up('u1', '10.0.0.1:80', { state: 'drain' })], { domains: ['a.example'] })),
    obs: baseObs([activeSlot(A, 1, '10.0.0.1:80', { drain: true, scur: 4 })]),
    ctx: { drainStartedAt: new Map([[`${A}/s1`, NOW - 60_000]]) },
    ops: [],
    pending: false,
    reasons: [],
    reload: false,
  },
  {
    name: 'state maint requested',
    desired: reg(http('a', [up('u1', '10.0.0.1:80', { state: 'maint' })], { domains: ['a.example'] })),
    obs: baseObs(),
    ops: [`set-state ${A}/s1 maint`],
    reasons: [],
    reload: false,
  },
  {
    name: 'back to ready from drain',
    desired: reg(base),
    obs: baseObs([activeSlot(A, 1, '10.0.0.1:80', { drain: true })]),
    ops: [`set-state ${A}/s1 ready`],
    reasons: [],
    reload: false,
  },
  {
    name: 'back to ready from maint (hold: held down until checks pass)',
    desired: reg(base),
    obs: baseObs([activeSlot(A, 1, '10.0.0.1:80', { maint: true, up: false, status: 'MAINT' })]),
    ctx: { holdUntilHealthy: true },
    ops: [`set-state ${A}/s1 drain`, `set-health ${A}/s1 down`, `set-state ${A}/s1 ready`],
    reasons: [],
    reload: false,
  },
  {
    name: 'ready slot whose observer folded CMAINT into maint (status UP): left alone',
    desired: reg(base),
    obs: baseObs([activeSlot(A, 1, '10.0.0.1:80', { maint: true })]),
    ctx: { holdUntilHealthy: true },
    ops: [],
    reasons: [],
    reload: false,
  },
  {
    name: 'domain added for an existing service: map-add and the file rewritten',
    desired: reg(http('a', [up('u1', '10.0.0.1:80')], { domains: ['a.example', 'b.example'] })),
    obs: baseObs(),
    ops: ['map-add hosts b.example http-a', 'write-map-file hosts'],
    reasons: [],
    reload: false,
  },
  {
    name: 'domain removed',
    desired: reg(http('a', [up('u1', '10.0.0.1:80')])),
    obs: baseObs(),
    ops: ['map-del hosts a.example', 'write-map-file hosts'],
    reasons: [],
    reload: false,
  },
  {
    name: 'unknown domain in the running map: removed',
    desired: reg(base),
    obs: baseObs(undefined, { 'a.example': A, 'junk.example': 'http-gone' }),
    ops: ['map-del hosts junk.example', 'write-map-file hosts'],
    reasons: [],
    reload: false,
  },
  {
    name: 'service removed: map-del before its slots drain; non-urgent reason',
    desired: reg(),
    obs: baseObs(),
    ops: ['map-del hosts a.example', 'write-map-file hosts', `set-state ${A}/s1 drain`],
    reasons: ['service-removed http-a'],
    reload: false,
    pending: true,
  },
  {
    name: 'service removed and drained: the reason stays until the reload drops the backend',
    desired: reg(),
    obs: observed([backendOf(base, 4)]),
    ops: [],
    reasons: ['service-removed http-a'],
    reload: false,
    pending: false,
  },
  {
    name: 'service added: urgent reload, no slot ops, its domain waits for the reload',
    desired: reg(base, http('b', [up('u1', '10.0.1.1:80')], { domains: ['b.example'] })),
    obs: baseObs(),
    ops: [],
    reasons: ['service-added http-b!'],
    reload: true,
  },
  {
    name: 'service changed (url_reg): urgent reload, runtime ops still planned',
    desired: reg(http('a', [up('u1', '10.0.0.1:80'), up('u2', '10.0.0.2:80')], { domains: ['a.example'], urlReg: '^/api' })),
    obs: baseObs(),
    ops: [`set-addr ${A}/s2 10.0.0.2:80`, `set-state ${A}/s2 ready`],
    reasons: ['service-changed http-a!'],
    reload: true,
  },
  {
    name: 'service changed (options)',
    desired: reg(http('a', [up('u1', '10.0.0.1:80')], { domains: ['a.example'], options: { balance: 'leastconn' } })),
    obs: baseObs(),
    ops: [],
    reasons: ['service-changed http-a!'],
    reload: true,
  },
  {
    name: 'running config without structure hash: urgent re-render',
    desired: reg(base),
    obs: observed([backend(A, 4, [activeSlot(A, 1, '10.0.0.1:80')], null)], { 'a.example': A }),
    ops: [],
    reasons: ['service-changed http-a!'],
    reload: true,
  },
  {
    name: 'tcp ports changed',
    desired: reg(tcp('t', [up('u1', '10.0.2.1:5432')], [5433])),
    obs: observed([backendOf(tcp('t', [], [5432]), 4, [activeSlot('tcp-t', 1, '10.0.2.1:5432')])]),
    ops: [],
    reasons: ['service-changed tcp-t!'],
    reload: true,
  },
  {
    name: 'sslpass turned on: new tls backend (urgent), old http backend retired, domain off the hosts map',
    desired: reg(http('a', [up('u1', '10.0.0.1:443')], { domains: ['a.example'], sslPassthrough: true })),
    obs: baseObs(),
    ops: ['map-del hosts a.example', 'write-map-file hosts', `set-state ${A}/s1 drain`],
    reasons: ['service-changed tls-a!', 'service-removed http-a'],
    reload: true,
  },
  {
    name: 'passthrough service domain goes to the sni map',
    desired: reg(http('p', [up('u1', '10.0.3.1:443')], { domains: ['p.example'], sslPassthrough: true })),
    obs: observed([backendOf(http('p', [], { sslPassthrough: true }), 4, [activeSlot('tls-p', 1, '10.0.3.1:443')])]),
    ops: ['map-add sni p.example tls-p', 'write-map-file sni'],
    reasons: [],
    reload: false,
  },
  {
    name: 'backends the updater does not manage are left alone',
    desired: reg(base),
    obs: observed([backendOf(base, 4, [activeSlot(A, 1, '10.0.0.1:80')]), backend('stats', 0), backend('be_default', 1)], {
      'a.example': A,
    }),
    ops: [],
    reasons: [],
    reload: false,
  },
];

function reasonStr(r: { kind: string; backend: string; urgent: boolean }): string {
  return `${r.kind} ${r.backend}${r.urgent ? '!' : ''}`;
}

test('classification table', async (t) => {
  for (const r of rows) {
    await t.test(r.name, () => {
      const p = plan(r.desired, r.obs, ctx(r.ctx));
      assert.deepEqual(brief(p.ops), r.ops);
      assert.deepEqual(p.reasons.map(reasonStr), r.reasons);
      assert.equal(p.reload, r.reload);
      if (r.pending !== undefined) assert.equal(p.pending, r.pending);
      for (const be of [...r.desired.http.values(), ...r.desired.tcp.values()]) {
        assert.ok(p.capacity.has(be.kind === 'tcp' ? `tcp-${be.name}` : `${be.sslPassthrough ? 'tls' : 'http'}-${be.name}`));
      }
    });
  }
});

test('removal: drain → wait → maint → cleared, over successive passes', () => {
  const desired = reg(http('a', [], { domains: ['a.example'] }));
  const step = (scur: number, drain: boolean, now: number, started: Map<string, number>) =>
    plan(desired, baseObs([activeSlot(A, 1, '10.0.0.1:80', { drain, scur })]), ctx({ now, drainStartedAt: started }));
  const p1 = step(3, false, NOW, new Map());
  assert.deepEqual(brief(p1.ops), [`set-state ${A}/s1 drain`]);
  assert.equal(p1.drainStartedAt.get(`${A}/s1`), NOW);
  const p2 = step(3, true, NOW + 250, p1.drainStartedAt);
  assert.deepEqual(brief(p2.ops), []);
  assert.equal(p2.drainStartedAt.get(`${A}/s1`), NOW, 'drain start carried over');
  assert.equal(p2.summary.drainsWaiting, 1);
  const p3 = step(1, true, NOW + 9_999, p2.drainStartedAt);
  assert.deepEqual(brief(p3.ops), []);
  const p4 = step(1, true, NOW + 10_000, p3.drainStartedAt);
  assert.deepEqual(brief(p4.ops), [`set-state ${A}/s1 maint`, `set-addr ${A}/s1 0.0.0.0:1`]);
  assert.equal(p4.drainStartedAt.size, 0);
  // after a restart the timer starts again (empty drainStartedAt): conservative, never early
  const r = step(1, true, NOW + 10_000, new Map());
  assert.deepEqual(brief(r.ops), []);
  assert.equal(r.drainStartedAt.get(`${A}/s1`), NOW + 10_000);
});

test('address change with hold: the old server drains only once the new one is UP or has failed', () => {
  const desired = reg(http('a', [up('u1', '10.0.0.9:80')], { domains: ['a.example'] }));
  const hold = ctx({ holdUntilHealthy: true });
  const p1 = plan(desired, baseObs(), hold);
  assert.deepEqual(brief(p1.ops), [
    `set-addr ${A}/s2 10.0.0.9:80`,
    `set-state ${A}/s2 drain`,
    `set-health ${A}/s2 down`,
    `set-state ${A}/s2 ready`,
  ]);
  assert.equal(p1.pending, true);
  assert.equal(p1.summary.drainsDeferred, 1);
  const warming = activeSlot(A, 2, '10.0.0.9:80', { up: false, status: 'DOWN 1/2', checkStatus: 'L4OK' });
  const p2 = plan(desired, baseObs([activeSlot(A, 1, '10.0.0.1:80'), warming]), hold);
  assert.deepEqual(brief(p2.ops), []);
  assert.equal(p2.pending, true);
  const p3 = plan(desired, baseObs([activeSlot(A, 1, '10.0.0.1:80'), activeSlot(A, 2, '10.0.0.9:80')]), hold);
  assert.deepEqual(brief(p3.ops), [`set-state ${A}/s1 drain`]);
  const failed = { ...warming, checkStatus: 'L4CON', status: 'DOWN' };
  const p4 = plan(desired, baseObs([activeSlot(A, 1, '10.0.0.1:80'), failed]), hold);
  assert.deepEqual(brief(p4.ops), [`set-state ${A}/s1 drain`]);
  // another UP upstream serves meanwhile: no reason to wait
  const two = reg(http('a', [up('u1', '10.0.0.9:80'), up('u2', '10.0.0.2:80')], { domains: ['a.example'] }));
  const p5 = plan(two, baseObs([activeSlot(A, 1, '10.0.0.1:80'), activeSlot(A, 3, '10.0.0.2:80')]), hold);
  assert.deepEqual(brief(p5.ops).slice(-1), [`set-state ${A}/s1 drain`]);
});

test('overflow: slots full → add-server + enable-health, ready once a check passed; capacity grows at the next reload', () => {
  const ups = [1, 2, 3, 4, 5, 6].map((i) => up(`u${i}`, `10.0.0.${i}:80`));
  const desired = reg(http('a', ups, { domains: ['a.example'] }));
  const full = [1, 2, 3, 4].map((i) => activeSlot(A, i, `10.0.0.${i}:80`));
  const hold = ctx({ holdUntilHealthy: true });
  const p1 = plan(desired, baseObs(full), hold);
  assert.deepEqual(brief(p1.ops), [
    `add-server ${A}/x1 10.0.0.5:80 w1`,
    `enable-health ${A}/x1`,
    `add-server ${A}/x2 10.0.0.6:80 w1`,
    `enable-health ${A}/x2`,
  ]);
  assert.deepEqual(p1.reasons.map(reasonStr), ['capacity http-a']);
  assert.equal(p1.reload, false);
  assert.equal(p1.pending, true);
  assert.equal(p1.capacity.get(A), 8);
  // next pass: x1 passed its check while in maint, x2 not yet
  const x1 = dynServer(A, 'x1', '10.0.0.5:80', { maint: true, up: false, status: 'MAINT', checkStatus: 'L4OK' });
  const x2 = dynServer(A, 'x2', '10.0.0.6:80', { maint: true, up: false, status: 'MAINT', checkStatus: '' });
  const p2 = plan(desired, baseObs([...full, x1, x2]), hold);
  assert.deepEqual(brief(p2.ops), [`set-state ${A}/x1 ready`]);
  assert.equal(p2.pending, true);
  assert.equal(p2.summary.waitingForHealth, 1);
  // without hold: ready at once
  const p3 = plan(desired, baseObs(full), ctx());
  assert.deepEqual(brief(p3.ops), [
    `add-server ${A}/x1 10.0.0.5:80 w1`,
    `enable-health ${A}/x1`,
    `set-state ${A}/x1 ready`,
    `add-server ${A}/x2 10.0.0.6:80 w1`,
    `enable-health ${A}/x2`,
    `set-state ${A}/x2 ready`,
  ]);
  // add-server carries maxconn from the options
  const mc = reg(http('a', ups, { domains: ['a.example'], options: { maxconn: 50 } }));
  const obs = observed([backendOf(mc.http.get('a')!, 4, full)], { 'a.example': A });
  const add = plan(mc, obs, ctx()).ops.find((o) => o.kind === 'add-server');
  assert.equal(add?.kind === 'add-server' && add.maxconn, 50);
});

test('overflow: lost enable-health is repaired; removal drains, then maint + del-server once idle', () => {
  const desired = reg(http('a', [up('u1', '10.0.0.1:80'), up('u5', '10.0.0.5:80')], { domains: ['a.example'] }));
  const lost = dynServer(A, 'x1', '10.0.0.5:80', { maint: true, up: false, status: 'MAINT', checkStatus: '', checkEnabled: false });
  const p0 = plan(desired, baseObs([activeSlot(A, 1, '10.0.0.1:80'), lost]), ctx({ holdUntilHealthy: true }));
  assert.deepEqual(brief(p0.ops), [`enable-health ${A}/x1`]);

  const only = reg(base);
  const x1 = dynServer(A, 'x1', '10.0.0.5:80', { scur: 2 });
  const p1 = plan(only, baseObs([activeSlot(A, 1, '10.0.0.1:80'), x1]), ctx());
  assert.deepEqual(brief(p1.ops), [`set-state ${A}/x1 drain`]);
  const busy = { ...x1, drain: true, scur: 2 };
  const p2 = plan(only, baseObs([activeSlot(A, 1, '10.0.0.1:80'), busy]), ctx({ drainStartedAt: p1.drainStartedAt }));
  assert.deepEqual(brief(p2.ops), []);
  const idle = { ...x1, drain: true, scur: 0 };
  const p3 = plan(only, baseObs([activeSlot(A, 1, '10.0.0.1:80'), idle]), ctx({ drainStartedAt: p1.drainStartedAt }));
  assert.deepEqual(brief(p3.ops), [`set-state ${A}/x1 maint`, `del-server ${A}/x1`]);
  // timeout with connections still attached: maint now, del-server once they are gone
  const p4 = plan(only, baseObs([activeSlot(A, 1, '10.0.0.1:80'), busy]), ctx({ now: NOW + 10_000, drainStartedAt: p1.drainStartedAt }));
  assert.deepEqual(brief(p4.ops), [`set-state ${A}/x1 maint`]);
  assert.equal(p4.pending, true);
  const maintIdle = { ...x1, maint: true, up: false, status: 'MAINT', scur: 0 };
  const p5 = plan(only, baseObs([activeSlot(A, 1, '10.0.0.1:80'), maintIdle]), ctx());
  assert.deepEqual(brief(p5.ops), [`del-server ${A}/x1`]);
});

test('static LB backend: no overflow, urgent static-lb-capacity; weights limited to 0 and 1', () => {
  const ups = [1, 2, 3, 4, 5].map((i) => up(`u${i}`, `10.0.0.${i}:80`));
  for (const balance of ['static-rr', 'source'] as const) {
    const svc = http('a', ups, { domains: ['a.example'], options: { balance } });
    const full = [1, 2, 3, 4].map((i) => activeSlot(A, i, `10.0.0.${i}:80`));
    const p = plan(reg(svc), observed([backendOf(svc, 4, full)], { 'a.example': A }), ctx());
    assert.deepEqual(brief(p.ops), [], balance);
    assert.deepEqual(p.reasons.map(reasonStr), ['static-lb-capacity http-a!'], balance);
    assert.equal(p.reload, true);
    assert.equal(p.capacity.get(A), 8);
    assert.equal(p.summary.unplaced, 1);
  }
  const w = http('a', [up('u1', '10.0.0.1:80', { weight: 5 }), up('u2', '10.0.0.2:80', { weight: 0 })], {
    domains: ['a.example'],
    options: { balance: 'static-rr' },
  });
  const p = plan(reg(w), observed([backendOf(w, 4, [activeSlot(A, 1, '10.0.0.1:80'), activeSlot(A, 2, '10.0.0.2:80')])], { 'a.example': A }), ctx());
  assert.deepEqual(brief(p.ops), [`set-weight ${A}/s2 0`]);
  assert.equal(p.summary.warnings.length, 1);
  assert.match(p.summary.warnings[0] ?? '', /weight 5/);
});

test('stable assignment: an upstream keeps its slot while others come and go, also after a restart', () => {
  const s3 = activeSlot(A, 3, '10.0.0.3:80');
  const d1 = reg(http('a', [up('c', '10.0.0.3:80'), up('a', '10.0.0.1:80'), up('b', '10.0.0.2:80')], { domains: ['a.example'] }));
  const p1 = plan(d1, baseObs([s3]), ctx());
  assert.deepEqual(brief(p1.ops), [
    `set-addr ${A}/s1 10.0.0.1:80`,
    `set-state ${A}/s1 ready`,
    `set-addr ${A}/s2 10.0.0.2:80`,
    `set-state ${A}/s2 ready`,
  ]);
  const applied = [activeSlot(A, 1, '10.0.0.1:80'), activeSlot(A, 2, '10.0.0.2:80'), s3];
  // a goes away, d comes: d takes s4 (s1 is still draining), c stays in s3
  const d2 = reg(http('a', [up('c', '10.0.0.3:80'), up('b', '10.0.0.2:80'), up('d', '10.0.0.4:80')], { domains: ['a.example'] }));
  const p2 = plan(d2, baseObs(applied), ctx());
  assert.deepEqual(brief(p2.ops), [`set-addr ${A}/s4 10.0.0.4:80`, `set-state ${A}/s4 ready`, `set-state ${A}/s1 drain`]);
  // restart: same observed state, empty drainStartedAt → same derivation, nothing to do
  const settled = [activeSlot(A, 2, '10.0.0.2:80'), s3, activeSlot(A, 4, '10.0.0.4:80')];
  const p3 = plan(d2, baseObs(settled), ctx({ drainStartedAt: new Map() }));
  assert.deepEqual(brief(p3.ops), []);
  assert.deepEqual(p3.reasons, []);
  assert.equal(p3.pending, false);
  // registry ids renamed (same addresses): still nothing to do
  const renamed = reg(http('a', [up('z1', '10.0.0.2:80'), up('z2', '10.0.0.3:80'), up('z3', '10.0.0.4:80')], { domains: ['a.example'] }));
  assert.deepEqual(brief(plan(renamed, baseObs(settled), ctx()).ops), []);
  // capacity keeps the highest occupied slot
  assert.equal(plan(reg(http('a', [up('c', '10.0.0.3:80')], { options: { minSlots: 1 } })), baseObs([s3]), ctx()).capacity.get(A), 4);
});

test('domains: add, remove and move between services', () => {
  const b = (domains: string[], ups = [up('u1', '10.0.1.1:80')]) => http('b', ups, { domains });
  const a = (domains: string[]) => http('a', [up('u1', '10.0.0.1:80')], { domains });
  const obs = (hosts: Record<string, string>) =>
    observed([backendOf(a([]), 4, [activeSlot(A, 1, '10.0.0.1:80')]), backendOf(b([]), 4, [activeSlot('http-b', 1, '10.0.1.1:80')])], hosts);

  // move x.example from a to b, add y.example to b, drop z.example
  const p = plan(reg(a([]), b(['x.example', 'y.example'])), obs({ 'x.example': A, 'z.example': A }), ctx());
  assert.deepEqual(brief(p.ops), [
    'map-del hosts z.example',
    'map-set hosts x.example http-b',
    'map-add hosts y.example http-b',
    'write-map-file hosts',
  ]);
  const write = p.ops.at(-1);
  assert.deepEqual(write?.kind === 'write-map-file' && write.entries, [
    ['x.example', 'http-b'],
    ['y.example', 'http-b'],
  ]);

  // a domain moving to a brand-new service keeps its current route until the reload
  const c = http('c', [up('u1', '10.0.2.1:80')], { domains: ['x.example'] });
  const p2 = plan(reg(a([]), b([]), c), obs({ 'x.example': A }), ctx());
  assert.deepEqual(brief(p2.ops), []);
  assert.deepEqual(p2.reasons.map(reasonStr), ['service-added http-c!']);

  // a domain whose owner is removed while the new owner does not exist yet: unrouted until the reload
  const p3 = plan(reg(b([]), c), obs({ 'x.example': A }), ctx());
  assert.deepEqual(brief(p3.ops), ['map-del hosts x.example', 'write-map-file hosts', `set-state ${A}/s1 drain`]);

  // slots of a domain's service are filled before the domain points at them
  const p4 = plan(reg(a([]), b(['n.example'], [up('u1', '10.0.1.1:80'), up('u2', '10.0.1.2:80')])), obs({}), ctx());
  assert.deepEqual(brief(p4.ops), [
    'set-addr http-b/s2 10.0.1.2:80',
    'set-state http-b/s2 ready',
    'map-add hosts n.example http-b',
    'write-map-file hosts',
  ]);
});

test('duplicate domain across services: lexicographically first service wins, warning noted', () => {
  const a = http('zeta', [up('u1', '10.0.0.1:80')], { domains: ['dup.example'] });
  const b = http('alpha', [up('u1', '10.0.1.1:80')], { domains: ['dup.example'] });
  const obs = observed([
    backendOf(a, 4, [activeSlot('http-zeta', 1, '10.0.0.1:80')]),
    backendOf(b, 4, [activeSlot('http-alpha', 1, '10.0.1.1:80')]),
  ]);
  const p = plan(reg(a, b), obs, ctx());
  assert.deepEqual(brief(p.ops), ['map-add hosts dup.example http-alpha', 'write-map-file hosts']);
  assert.deepEqual(p.summary.warnings, ['hosts map: domain dup.example claimed by alpha, zeta; alpha wins']);
  // same claim, the other way round in etcd order: same result
  const p2 = plan(reg(b, a), obs, ctx());
  assert.deepEqual(brief(p2.ops), brief(p.ops));
  // the maps are separate routing tables: a passthrough service may share the domain (sni map)
  const t = http('tls', [up('u1', '10.0.3.1:443')], { domains: ['dup.example'], sslPassthrough: true });
  const t2 = http('tls2', [up('u1', '10.0.4.1:443')], { domains: ['dup.example'], sslPassthrough: true });
  const p3 = plan(
    reg(b, t, t2),
    observed([obs.backends.get('http-alpha')!, backendOf(t, 4), backendOf(t2, 4)], { 'dup.example': 'http-alpha' }),
    ctx(),
  );
  assert.deepEqual(brief(p3.ops).filter((o) => o.startsWith('map')), ['map-add sni dup.example tls-tls']);
  assert.deepEqual(p3.summary.warnings, ['sni map: domain dup.example claimed by tls, tls2; tls wins']);
});

test('duplicate upstream address in one service: one server, warning', () => {
  const svc = http('a', [up('u1', '10.0.0.1:80'), up('u2', '10.0.0.1:80')], { domains: ['a.example'] });
  const p = plan(reg(svc), baseObs(), ctx());
  assert.deepEqual(brief(p.ops), []);
  assert.equal(p.summary.warnings.length, 1);
});

test('service added: capacity from the desired upstream count', () => {
  const ups = Array.from({ length: 9 }, (_, i) => up(`u${i}`, `10.0.5.${i + 1}:80`));
  const p = plan(reg(http('big', ups)), observed([]), ctx());
  assert.equal(p.capacity.get('http-big'), 16);
  assert.equal(p.reload, true);
  assert.deepEqual(p.ops, []);
});

test('plan is pure: inputs untouched, same inputs → same plan', () => {
  const desired = reg(http('a', [up('u2', '10.0.0.2:80')], { domains: ['b.example'] }));
  const obs = baseObs();
  const started = new Map([[`${A}/s9`, 5]]);
  const snapshot = JSON.stringify([...obs.backends.values()]);
  const c = ctx({ drainStartedAt: started });
  const p1 = plan(desired, obs, c);
  const p2 = plan(desired, obs, c);
  assert.deepEqual(p1, p2);
  assert.equal(JSON.stringify([...obs.backends.values()]), snapshot);
  assert.deepEqual([...started], [[`${A}/s9`, 5]]);
  assert.equal(p1.drainStartedAt.has(`${A}/s9`), false, 'entries of servers no longer draining are dropped');
});

test('describePlan: readable lines', () => {
  const desired = reg(http('a', [up('u2', '10.0.0.2:80')], { domains: ['b.example'] }), http('n', []));
  const lines = describePlan(plan(desired, baseObs(), ctx()));
  const text = lines.join('\n');
  assert.match(text, /^reload: now \(service-added http-n\)/);
  assert.match(text, /reason \[urgent\] service-added http-n: new backend/);
  assert.match(text, /op set server http-a\/s2 addr 10\.0\.0\.2 port 80 {2}# add u2 10\.0\.0\.2:80/);
  assert.match(text, /op del map <hosts\.map> a\.example/);
  assert.match(text, /op set server http-a\/s1 state drain {2}# upstream removed 10\.0\.0\.1:80: drain/);
  assert.match(text, /capacity: http-a=4 http-n=4/);
  assert.match(text, /pending: yes/);
  assert.deepEqual(describePlan(plan(reg(base), baseObs(), ctx())), [
    'reload: not needed',
    'runtime: nothing to do',
    'summary: 1 backend(s), 1 upstream(s)',
    'capacity: http-a=4',
  ]);
  assert.ok(structureHash(base).length === 16);
});
