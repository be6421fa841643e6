/**
 * /readyz's computation (src/daemon/readiness.ts): ready means every service with
 * registered upstreams has a serving server, or has waited --ready-grace for one.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ReadinessTracker, unservedServices, type DaemonState } from '../../src/daemon/readiness.js';
import { decideHold } from '../../src/reconcile/index.js';
import { activeSlot, backend, freeSlot, http, observed, reg, tcp, up } from './reconcile-helpers.js';

const OK: DaemonState = { registryLoaded: true, etcdDown: null, lastPassOk: true, lastPassError: null, refused: null, failedReload: null, stopping: false, hold: null, warnings: [] };
const REG = reg(http('web', [up('w1', '127.0.0.1:8001'), up('w2', '127.0.0.1:8002')]), tcp('db', [up('d1', '127.0.0.1:5432')]), http('idle', [up('i', '127.0.0.1:8009', { state: 'maint' })]));
const DOWN = observed([backend('http-web', 2, [activeSlot('http-web', 1, '127.0.0.1:8001', { up: false, status: 'DOWN' })]), backend('tcp-db', 1, [activeSlot('tcp-db', 1, '127.0.0.1:5432')])]);
const UP = observed([backend('http-web', 2, [activeSlot('http-web', 1, '127.0.0.1:8001')]), backend('tcp-db', 1, [activeSlot('tcp-db', 1, '127.0.0.1:5432')])]);

test('unservedServices: registered ready upstreams and no serving server; all-maint services are not expected to serve', () => {
  assert.deepEqual(unservedServices(REG, DOWN), [{ service: 'http/web', backend: 'http-web', registered: 2 }]);
  assert.deepEqual(unservedServices(REG, UP), []);
  // A backend HAProxy does not have yet (its reload still to come) is unserved too.
  assert.deepEqual(unservedServices(REG, observed([])).map((u) => u.service), ['http/web', 'tcp/db']);
  const drained = observed([backend('http-web', 1, [activeSlot('http-web', 1, '127.0.0.1:8001', { drain: true })]), backend('tcp-db', 1, [freeSlot('tcp-db', 1)])]);
  assert.deepEqual(unservedServices(REG, drained).map((u) => u.service), ['http/web', 'tcp/db']);
});

test('ReadinessTracker: 503 while a new service waits within the grace, then 200 listing it', () => {
  const t = new ReadinessTracker(10_000);
  t.update(REG, DOWN, 1000);
  let r = t.compute(OK, 1000);
  assert.equal(r.ready, false);
  assert.match(r.reasons.join('\n'), /http\/web: no serving upstream in HAProxy \(2 registered, none UP\); waiting up to 10s more \(--ready-grace\)/);
  assert.equal(t.waiting(1000), true);
  t.update(REG, DOWN, 10_999);
  assert.equal(t.compute(OK, 10_999).ready, false, 'still within the grace');
  t.update(REG, DOWN, 11_000);
  r = t.compute(OK, 11_000);
  assert.equal(r.ready, true, 'grace over');
  assert.deepEqual(r.warnings, ['http/web: no serving upstream in HAProxy (2 registered, none UP)']);
  assert.equal(t.waiting(11_000), false);
  assert.equal(t.unserved.length, 1);
});

test('ReadinessTracker: ready as soon as every service serves; a later outage is listed, not a 503', () => {
  const t = new ReadinessTracker(10_000);
  t.update(REG, DOWN, 0);
  t.update(REG, UP, 500);
  assert.deepEqual(t.compute(OK, 500), { ready: true, reasons: [], warnings: [] });
  t.update(REG, DOWN, 600);
  const r = t.compute(OK, 600);
  assert.equal(r.ready, true, 'served once: an upstream outage does not take the load balancer out of rotation');
  assert.equal(r.warnings?.length, 1);
  // Removed and registered again: a new service, waited for again.
  const without = reg(tcp('db', [up('d1', '127.0.0.1:5432')]));
  t.update(without, UP, 700);
  t.update(REG, DOWN, 800);
  assert.equal(t.compute(OK, 800).ready, false);
});

test('ReadinessTracker: the daemon state reasons, the hold among them', () => {
  const t = new ReadinessTracker(0);
  t.update(REG, UP, 0);
  const hold = decideHold({ applied: REG, next: reg(), serving: new Set(['http-web|127.0.0.1:8001', 'tcp-db|127.0.0.1:5432']), maxRemoval: 0.5, released: null }).hold;
  const r = t.compute({ ...OK, hold, refused: 'bad url_reg', failedReload: 'reload failed at the HAProxy master 2 time(s) in a row', etcdDown: null, lastPassOk: false, lastPassError: 'boom', stopping: true, warnings: ['certificate file rejected: x'] }, 0);
  assert.equal(r.ready, false);
  assert.equal(r.reasons.length, 5);
  assert.match(r.reasons[0]!, /^last pass failed: boom/);
  assert.match(r.reasons[2]!, /^reload failed at the HAProxy master 2 time/);
  assert.match(r.reasons[3]!, /^registry update held \(etcd revision 1\).*release with `haproxy-updater release-hold`/);
  assert.deepEqual(r.warnings, ['certificate file rejected: x']);
  const notLoaded = new ReadinessTracker(0).compute({ ...OK, registryLoaded: false, etcdDown: 'http://127.0.0.1:1' }, 0);
  assert.deepEqual(notLoaded.reasons, ['registry not loaded yet: etcd http://127.0.0.1:1 unreachable']);
});

test('ReadinessTracker: a service registered without upstreams first is waited for once they come', () => {
  const t = new ReadinessTracker(10_000);
  const bare = reg(http('web', []), tcp('db', [up('d1', '127.0.0.1:5432')]));
  t.update(bare, UP, 0);
  assert.equal(t.compute(OK, 0).ready, true);
  t.update(REG, observed([backend('http-web', 2), backend('tcp-db', 1, [activeSlot('tcp-db', 1, '127.0.0.1:5432')])]), 100);
  assert.equal(t.compute(OK, 100).ready, false, 'its first upstreams are not UP yet');
});

test('http endpoints: /readyz body, POST-only /release-hold', async () => {
  const { serveEndpoints } = await import('../../src/daemon/http.js');
  const { Metrics } = await import('../../src/metrics.js');
  const { rootLogger } = await import('../../src/log.js');
  rootLogger.level = 'warn'; // quiet: the listen line is info
  let held = true;
  let readiness: ReturnType<ReadinessTracker['compute']> = { ready: false, reasons: ['registry update held (etcd revision 9): it removes 2 of 2 serving upstreams'], warnings: [] };
  const hold = decideHold({ applied: REG, next: reg(), serving: new Set(['http-web|127.0.0.1:8001', 'tcp-db|127.0.0.1:5432']), maxRemoval: 0.5, released: null }).hold;
  const daemon = {
    metrics: new Metrics(),
    readiness: () => readiness,
    releaseHold: async () => {
      const was = held ? hold : null;
      held = false;
      return was;
    },
  };
  const server = await serveEndpoints(daemon, { host: '127.0.0.1', port: 0 });
  const port = (server.address() as { port: number }).port;
  const call = async (method: string, p: string) => {
    const r = await fetch(`http://127.0.0.1:${port}${p}`, { method });
    return { status: r.status, body: await r.text() };
  };
  try {
    assert.deepEqual(await call('GET', '/readyz'), { status: 503, body: 'registry update held (etcd revision 9): it removes 2 of 2 serving upstreams\n' });
    assert.equal((await call('GET', '/release-hold')).status, 405, 'a GET releases nothing');
    assert.equal(held, true);
    const released = await call('POST', '/release-hold');
    assert.equal(released.status, 200);
    assert.match(released.body, /^released: registry update held \(etcd revision 1\)/);
    assert.deepEqual(await call('POST', '/release-hold'), { status: 409, body: 'nothing is held\n' });
    readiness = { ready: true, reasons: [], warnings: ['http/web: no serving upstream in HAProxy (2 registered, none UP)'] };
    assert.deepEqual(await call('GET', '/readyz'), { status: 200, body: 'ready\nhttp/web: no serving upstream in HAProxy (2 registered, none UP)\n' });
  } finally {
    server.close();
  }
});
