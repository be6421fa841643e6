/**
 * The mass-deletion hold (src/reconcile/hold.ts): which updates are held, what the held
 * registry keeps, and how a release or a registry coming back lets them through.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decideHold, parseMaxRemoval, servingKey, servingSet, type HoldInput } from '../../src/reconcile/index.js';
import type { Registry } from '../../src/model.js';
import { activeSlot, backend, freeSlot, http, observed, reg, tcp, up } from './reconcile-helpers.js';

const a = (n: number) => Array.from({ length: n }, (_, i) => up(`a${i}`, `127.0.0.1:${8000 + i}`));
const b = (n: number) => Array.from({ length: n }, (_, i) => up(`b${i}`, `127.0.0.2:${9000 + i}`));
const A4 = http('alpha', a(4), { domains: ['alpha.test'] });
const B2 = http('beta', b(2), { domains: ['beta.test'] });
const APPLIED = reg(A4, B2);
/** Every upstream of APPLIED serves. */
const ALL = new Set([...a(4).map((u) => servingKey('http-alpha', u.addr, u.port)), ...b(2).map((u) => servingKey('http-beta', u.addr, u.port))]);

function upstreamIds(r: Registry): string[] {
  return [...r.http.values(), ...r.tcp.values()].flatMap((s) => [...s.upstreams.keys()].map((id) => `${s.kind}/${s.name}/${id}`)).sort();
}

function input(o: Partial<HoldInput>): HoldInput {
  return { applied: APPLIED, next: APPLIED, serving: ALL, maxRemoval: 0.5, released: null, ...o };
}

test('decideHold: table', () => {
  const rows: Array<{ name: string; in: HoldInput; held: boolean; released?: boolean; emptied?: string[]; removedServing?: number; applies: string[] }> = [
    { name: 'no change', in: input({}), held: false, applies: upstreamIds(APPLIED) },
    { name: 'first pass (nothing applied yet): never held', in: input({ applied: null, next: reg() }), held: false, applies: [] },
    { name: 'everything deleted', in: input({ next: reg() }), held: true, emptied: ['http/alpha', 'http/beta'], removedServing: 6, applies: upstreamIds(APPLIED) },
    { name: '3 of 6 serving removed = 50%: not more than 50%', in: input({ next: reg(http('alpha', a(4).slice(0, 1)), B2) }), held: false, applies: [...upstreamIds(reg(http('alpha', a(1)))), ...upstreamIds(reg(B2))].sort() },
    { name: '4 of 6 serving removed: held', in: input({ next: reg(http('alpha', a(4).slice(0, 1)), http('beta', b(1))) }), held: true, removedServing: 4, emptied: [], applies: upstreamIds(APPLIED) },
    { name: 'last upstream of one serving service (deregister)', in: input({ next: reg(A4, http('beta', b(1))), serving: new Set([...ALL].filter((k) => !k.startsWith('http-beta|127.0.0.2:9000'))) }), held: false, applies: upstreamIds(reg(A4, http('beta', b(1)))) },
    { name: 'every upstream of one serving service, others remain', in: input({ next: reg(A4) }), held: true, emptied: ['http/beta'], removedServing: 2, applies: upstreamIds(APPLIED) },
    { name: 'service whose upstreams were not serving: let go', in: input({ next: reg(A4), serving: new Set([...ALL].filter((k) => !k.startsWith('http-beta'))) }), held: false, applies: upstreamIds(reg(A4)) },
    { name: 'nothing serves (all DOWN): a mass removal goes through', in: input({ next: reg(), serving: new Set() }), held: false, applies: [] },
    { name: '--max-removal 100%: never held', in: input({ next: reg(), maxRemoval: 1 }), held: false, applies: [] },
    { name: '--max-removal 0%: one serving upstream removed is held', in: input({ next: reg(http('alpha', a(3)), B2), maxRemoval: 0 }), held: true, removedServing: 1, emptied: [], applies: upstreamIds(APPLIED) },
    { name: 'released removals go through', in: input({ next: reg(), released: new Set(upstreamIds(APPLIED)) }), held: false, released: true, applies: [] },
    { name: 'a release does not cover removals it did not see', in: input({ next: reg(), released: new Set(upstreamIds(reg(A4))) }), held: true, applies: upstreamIds(APPLIED) },
    { name: 'a release covers a smaller removal (part came back)', in: input({ next: reg(A4), released: new Set(upstreamIds(APPLIED)) }), held: false, released: true, applies: upstreamIds(reg(A4)) },
    {
      name: 'held, additions applied beside the kept upstreams',
      in: input({ next: reg(http('alpha', [up('new', '127.0.0.9:7000')]), http('gamma', [up('g', '127.0.0.3:7000')])) }),
      held: true,
      applies: [...upstreamIds(APPLIED), 'http/alpha/new', 'http/gamma/g'].sort(),
    },
    {
      name: 'address change of every upstream is a modification, not a removal',
      in: input({ next: reg(http('alpha', a(4).map((u) => ({ ...u, addr: '127.0.0.8' }))), http('beta', b(2).map((u) => ({ ...u, port: u.port + 1 })))) }),
      held: false,
      applies: upstreamIds(APPLIED),
    },
    {
      name: 'replacement of a single upstream by a new id: held while the new one warms up (make before break)',
      in: input({ applied: reg(http('solo', [up('old', '127.0.0.1:1')])), next: reg(http('solo', [up('new', '127.0.0.1:2')])), serving: new Set(['http-solo|127.0.0.1:1']) }),
      held: true,
      emptied: [],
      applies: ['http/solo/new', 'http/solo/old'],
    },
    {
      name: 'same replacement once the new one serves (applied = the held registry): 1 of 2, lifted',
      in: input({ applied: reg(http('solo', [up('old', '127.0.0.1:1'), up('new', '127.0.0.1:2')])), next: reg(http('solo', [up('new', '127.0.0.1:2')])), serving: new Set(['http-solo|127.0.0.1:1', 'http-solo|127.0.0.1:2']) }),
      held: false,
      applies: ['http/solo/new'],
    },
    {
      name: 'tcp service counted like http',
      in: input({ applied: reg(tcp('db', [up('p', '127.0.0.4:5432')])), next: reg(), serving: new Set([servingKey('tcp-db', '127.0.0.4', 5432)]) }),
      held: true,
      emptied: ['tcp/db'],
      applies: ['tcp/db/p'],
    },
  ];
  for (const r of rows) {
    const out = decideHold(r.in);
    assert.equal(out.hold !== null, r.held, `${r.name}: held`);
    assert.equal(out.released, r.released ?? false, `${r.name}: released`);
    assert.deepEqual(upstreamIds(out.registry), r.applies, `${r.name}: registry applied`);
    if (r.emptied) assert.deepEqual(out.hold?.emptied, r.emptied, `${r.name}: emptied`);
    if (r.removedServing !== undefined) assert.equal(out.hold?.removedServing, r.removedServing, `${r.name}: removedServing`);
  }
});

test('decideHold: the held registry keeps the removed service whole (domains) and takes modifications of the rest', () => {
  const next = reg(http('alpha', a(4).map((u) => ({ ...u, weight: 7 })), { domains: ['alpha.test', 'more.test'] }));
  const out = decideHold(input({ next, serving: new Set([...ALL].filter((k) => k.startsWith('http-beta'))) }));
  assert.ok(out.hold, 'beta emptied: held');
  assert.deepEqual(out.registry.http.get('beta')?.domains, ['beta.test']);
  assert.deepEqual(out.registry.http.get('alpha')?.domains, ['alpha.test', 'more.test']);
  assert.deepEqual([...out.registry.http.get('alpha')!.upstreams.values()].map((u) => u.weight), [7, 7, 7, 7]);
  assert.match(out.hold.summary, /removes every upstream of http\/beta/);
  assert.match(out.hold.summary, /HAProxy keeps 2 upstream\(s\) \(http\/beta\/b0, http\/beta\/b1\)/);
});

test('decideHold: the summary names the share and the flag', () => {
  const out = decideHold(input({ next: reg() }));
  assert.match(out.hold!.summary, /removes 6 of 6 serving upstreams \(more than --max-removal 50%\)/);
  assert.match(out.hold!.summary, /etcd revision 1/);
});

test('servingSet: UP and ready only (not maint, drain or DOWN)', () => {
  const o = observed([
    backend('http-x', 4, [
      activeSlot('http-x', 1, '127.0.0.1:1001'),
      activeSlot('http-x', 2, '127.0.0.1:1002', { drain: true }),
      activeSlot('http-x', 3, '127.0.0.1:1003', { up: false, status: 'DOWN' }),
      freeSlot('http-x', 4, { addr: '127.0.0.1', port: 1004 }),
    ]),
  ]);
  assert.deepEqual([...servingSet(o)], ['http-x|127.0.0.1:1001']);
});

test('parseMaxRemoval', () => {
  const rows: Array<[string, number | null]> = [['50%', 0.5], ['50', 0.5], ['0%', 0], ['100%', 1], ['12.5%', 0.125], ['101%', null], ['-1%', null], ['half', null], ['', null]];
  for (const [text, want] of rows) assert.equal(parseMaxRemoval(text), want, text);
});

test('removesNothing: true exactly when decideHold has no removal to count', async () => {
  const { removesNothing } = await import('../../src/reconcile/index.js');
  assert.equal(removesNothing(null, APPLIED), true, 'nothing applied yet');
  assert.equal(removesNothing(APPLIED, APPLIED), true, 'same registry');
  assert.equal(removesNothing(APPLIED, reg(A4, B2, http('gamma', [up('g', '127.0.0.3:7000')]))), true, 'an added service');
  assert.equal(removesNothing(APPLIED, reg(http('alpha', [...a(4), up('new', '127.0.0.9:1')]), B2)), true, 'an added upstream (a changed service object)');
  assert.equal(removesNothing(APPLIED, reg(http('alpha', a(4).map((u) => ({ ...u, addr: '127.0.0.8' }))), B2)), true, 'addresses changed, ids kept');
  assert.equal(removesNothing(APPLIED, reg(http('alpha', a(3)), B2)), false, 'an upstream removed');
  assert.equal(removesNothing(APPLIED, reg(A4)), false, 'a service removed');
  // Whenever it says true, decideHold lets the update through unchanged.
  for (const next of [APPLIED, reg(A4, B2, http('gamma', [up('g', '127.0.0.3:7000')]))]) {
    const r = decideHold(input({ next, maxRemoval: 0 }));
    assert.equal(r.hold, null);
    assert.equal(r.registry, next);
  }
});
