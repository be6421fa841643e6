import { test } from 'node:test';
import assert from 'node:assert/strict';
import { NAMED_DEFAULTS } from '../../src/model.js';
import { staticBackendRefs } from '../../src/render/index.js';
import { plan, placeNewService, placeRemovedService, runtimeAddProblem } from '../../src/reconcile/index.js';
import { activeSlot, backendOf, brief, ctx, freeSlot, http, observed, reg, tcp, up } from './reconcile-helpers.js';

const a = http('a', [up('u1', '10.0.0.1:80')], { domains: ['a.example'] });
const b = http('b', [up('u2', '10.0.0.2:80'), up('u1', '10.0.0.3:80')], { domains: ['b.example'] });
const aObs = () => observed([backendOf(a, 4, [activeSlot('http-a', 1, '10.0.0.1:80')])], { 'a.example': 'http-a' });

test('placement: runtime only with the capability, no refusal, no other reload and no config lines of its own', () => {
  const ok = { dynamicBackends: true, refused: false, reloadAnyway: false };
  assert.deepEqual(placeNewService(b, ok), { kind: 'runtime' });
  assert.equal(placeNewService(b, { ...ok, dynamicBackends: false }).kind, 'reload');
  assert.equal(placeNewService(b, { ...ok, refused: true }).kind, 'reload');
  assert.equal(placeNewService(b, { ...ok, reloadAnyway: true }).kind, 'reload');
  assert.match(runtimeAddProblem(tcp('t', [up('u', '10.0.0.9:5')])) ?? '', /tcp/);
  assert.match(runtimeAddProblem(http('p', [], { sslPassthrough: true })) ?? '', /sslpass/);
  assert.match(runtimeAddProblem(http('r', [], { urlReg: '^/x' })) ?? '', /url_reg/);
  assert.match(runtimeAddProblem(http('h', [], { options: { healthPath: '/h' } })) ?? '', /httpchk/);
  assert.match(runtimeAddProblem(http('l', [], { options: { balance: 'leastconn' } })) ?? '', /balance/);
  assert.match(runtimeAddProblem(http('default', [])) ?? '', /default_backend/);
  const rm = { dynamicBackends: true, reloadAnyway: false, staticRefs: new Set(['http-default', 'http-special']) };
  assert.equal(placeRemovedService('http-b', rm), 'runtime');
  assert.equal(placeRemovedService('http-b', { ...rm, reloadAnyway: true }), 'reload');
  assert.equal(placeRemovedService('http-b', { ...rm, dynamicBackends: false }), 'reload');
  assert.equal(placeRemovedService('http-default', rm), 'reload');
  assert.equal(placeRemovedService('http-special', rm), 'reload');
  assert.deepEqual(
    [...staticBackendRefs('frontend f\n    use_backend http-special if { url_reg -f /x }\n    use_backend %[var(txn.host),map(/m)]\n    default_backend no-route\n')].sort(),
    ['http-special', 'no-route'],
  );
});

test('new service on 3.4: add backend, servers, publish, then its map entries; no reload', () => {
  const p = plan(reg(a, b), aObs(), ctx({ dynamicBackends: true }));
  assert.deepEqual(p.reasons, []);
  assert.equal(p.reload, false);
  assert.deepEqual(brief(p.ops), [
    `add-backend http-b from ${NAMED_DEFAULTS}`,
    'add-server http-b/s1 10.0.0.3:80 w1',
    'enable-health http-b/s1',
    'set-state http-b/s1 ready',
    'add-server http-b/s2 10.0.0.2:80 w1',
    'enable-health http-b/s2',
    'set-state http-b/s2 ready',
    'publish-backend http-b',
    'map-add hosts b.example http-b',
    'write-map-file hosts',
  ]);
  assert.equal(p.capacity.get('http-b'), 4);
});

test('new service without the capability, refused before, or beside another urgent reason: one reload, no backend ops', () => {
  const changedA = http('a', [up('u1', '10.0.0.1:80')], { domains: ['a.example'], options: { healthPath: '/h' } });
  for (const [desired, c] of [
    [reg(a, b), ctx()],
    [reg(a, b), ctx({ dynamicBackends: true, runtimeRefused: new Set(['http-b']) })],
    [reg(changedA, b), ctx({ dynamicBackends: true })],
  ] as const) {
    const p = plan(desired, aObs(), c);
    assert.equal(p.reload, true);
    assert.ok(p.reasons.some((r) => r.kind === 'service-added' && r.backend === 'http-b'));
    assert.deepEqual(brief(p.ops).filter((o) => o.includes('http-b')), []);
  }
});

test('removed service on 3.4: map entry out, unpublish, drain; once idle del server then del backend; never a reason', () => {
  const obs = observed(
    [backendOf(a, 4, [activeSlot('http-a', 1, '10.0.0.1:80')]), backendOf(b, 2, [activeSlot('http-b', 1, '10.0.0.2:80', { scur: 3 }), freeSlot('http-b', 2)])],
    { 'a.example': 'http-a', 'b.example': 'http-b' },
  );
  const first = plan(reg(a), obs, ctx({ dynamicBackends: true }));
  assert.deepEqual(first.reasons, []);
  assert.deepEqual(brief(first.ops), [
    'map-del hosts b.example',
    'write-map-file hosts',
    'unpublish-backend http-b',
    'set-state http-b/s1 drain',
    'del-server http-b/s2',
  ]);
  assert.equal(first.pending, true);

  const drained = observed(
    [backendOf(a, 4, [activeSlot('http-a', 1, '10.0.0.1:80')]), backendOf(b, 2, [activeSlot('http-b', 1, '10.0.0.2:80', { drain: true })])],
    { 'a.example': 'http-a' },
  );
  const last = plan(reg(a), drained, ctx({ dynamicBackends: true, drainStartedAt: first.drainStartedAt }));
  // backendOf lists s2 as a free slot again: this observation is made up, a real one would not have it.
  assert.deepEqual(brief(last.ops), ['set-state http-b/s1 maint', 'del-server http-b/s1', 'del-server http-b/s2', 'del-backend http-b']);
  assert.deepEqual(last.reasons, []);

  // Without the capability: the backend waits for the next reload, as before.
  const old = plan(reg(a), obs, ctx());
  assert.deepEqual(old.reasons.map((r) => r.kind), ['service-removed']);
  assert.equal(brief(old.ops).some((o) => o.includes('backend')), false);
});

test('hold until healthy: the new backend\'s domains wait for its first UP server', () => {
  const first = plan(reg(a, b), aObs(), ctx({ dynamicBackends: true, holdUntilHealthy: true }));
  assert.equal(brief(first.ops).some((o) => o.startsWith('map-add hosts b.example')), false);
  assert.equal(brief(first.ops).some((o) => o.startsWith('set-state http-b')), false, 'servers stay in maint until checked');
  assert.equal(first.pending, true);
  const bObs = (upNow: boolean) =>
    observed(
      [
        backendOf(a, 4, [activeSlot('http-a', 1, '10.0.0.1:80')]),
        backendOf(b, 2, [activeSlot('http-b', 1, '10.0.0.3:80', { up: upNow, checkStatus: upNow ? 'L4OK' : 'INI' }), activeSlot('http-b', 2, '10.0.0.2:80', { up: false, checkStatus: 'INI' })]),
      ],
      { 'a.example': 'http-a' },
    );
  const c = ctx({ dynamicBackends: true, holdUntilHealthy: true });
  assert.equal(brief(plan(reg(a, b), bObs(false), c).ops).includes('map-add hosts b.example http-b'), false);
  assert.equal(brief(plan(reg(a, b), bObs(true), c).ops).includes('map-add hosts b.example http-b'), true);
});
