/**
 * registerUpstream / deregisterUpstream against a real etcd 3.4: the key lives as long as
 * the lease is kept alive, disappears at once on close(), and after the TTL when the
 * keepalive stops without a revoke (a crashed registrar).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startEtcd, waitFor, sleep } from '../../testkit/index.js';
import { registerUpstream, deregisterUpstream, RegistryWatcher, parseUpstreamValue } from '../../src/watch/index.js';
import { ConfigError, RegistryValueError } from '../../src/errors.js';

const P = '/haproxy-discover';
const H = `${P}/http-services`;
const T = `${P}/tcp-services`;

const get = async (etcd: Awaited<ReturnType<typeof startEtcd>>, key: string) => (await etcd.ctl('get', key, '--print-value-only')).replace(/\n$/, '');

test('registerUpstream keeps the key past its TTL, close() removes it at once; the watcher sees both', async (t) => {
  const etcd = await startEtcd();
  t.after(() => etcd.destroy());
  const watcher = new RegistryWatcher({ endpoints: [etcd.endpoint], prefix: P });
  t.after(() => watcher.stop());
  await watcher.start();

  const reg = await registerUpstream({ endpoints: [etcd.endpoint], prefix: P, kind: 'http', service: 'web', id: 'web-1', addr: '10.0.0.1', port: 8080, ttlSec: 2, domains: ['Web.Example.', 'api.example'] });
  // t.after hooks run in registration order (etcd is destroyed first): close explicitly below, these are fallbacks.
  t.after(() => reg.close().catch(() => undefined));
  assert.equal(reg.key, `${H}/web/upstreams/web-1`);
  assert.equal(reg.value, '10.0.0.1:8080', 'seed format without weight');
  assert.equal(await get(etcd, reg.key), '10.0.0.1:8080');
  assert.equal(await get(etcd, `${H}/web/domain`), 'api.example,web.example');
  const lease = await etcd.ctl('lease', 'timetolive', BigInt(reg.leaseId).toString(16));
  assert.match(lease, /granted with TTL\(2s\)/);

  await waitFor(() => watcher.current?.registry.http.get('web')?.upstreams.get('web-1')?.port === 8080, { timeoutMs: 5000, what: 'watcher sees the registration' });
  await sleep(5000); // 2.5 × TTL
  assert.equal(await get(etcd, reg.key), '10.0.0.1:8080', 'kept alive past the TTL');

  // A second instance of the same service: domains merged (CAS), nothing dropped.
  const reg2 = await registerUpstream({ endpoints: [etcd.endpoint], prefix: P, kind: 'http', service: 'web', id: 'web-2', addr: '::1', port: 8081, weight: 5, ttlSec: 2, domains: ['web.example', 'b.example'] });
  t.after(() => reg2.close().catch(() => undefined));
  assert.deepEqual(parseUpstreamValue(await get(etcd, reg2.key)), { ok: true, value: { addr: '::1', port: 8081, weight: 5, state: 'ready' } });
  assert.equal(await get(etcd, `${H}/web/domain`), 'api.example,b.example,web.example');

  await reg.close();
  assert.equal(await get(etcd, reg.key), '', 'key gone right after close()');
  await reg.close(); // idempotent
  await waitFor(() => watcher.current?.registry.http.get('web')?.upstreams.has('web-1') === false, { timeoutMs: 5000, what: 'watcher sees the removal' });
  assert.ok(watcher.current!.registry.http.get('web')!.upstreams.has('web-2'));
  assert.equal(await get(etcd, `${H}/web/domain`), 'api.example,b.example,web.example', 'shared domain key stays');
  await reg2.close();
  await watcher.stop();
});

test('a registrar that stops keeping alive without revoking: the key disappears after the TTL', async (t) => {
  const etcd = await startEtcd();
  t.after(() => etcd.destroy());
  const reg = await registerUpstream({ endpoints: [etcd.endpoint], prefix: P, kind: 'tcp', service: 'db', id: 'db-1', addr: '10.0.0.2', port: 5432, ttlSec: 2 });
  let lost = false;
  void reg.lost.then(() => (lost = true));
  assert.equal(await get(etcd, `${T}/db/upstreams/db-1`), '10.0.0.2:5432');
  await reg.release(); // as if the process had crashed: no revoke
  const releasedAt = Date.now();
  await sleep(500);
  assert.equal(await get(etcd, reg.key), '10.0.0.2:5432', 'still there right after the keepalive stopped');
  await waitFor(async () => (await get(etcd, reg.key)) === '', { timeoutMs: 8000, intervalMs: 200, what: 'key expired' });
  const ms = Date.now() - releasedAt;
  t.diagnostic(`key gone ${ms} ms after the keepalive stopped`);
  assert.ok(ms >= 1000 && ms < 6000, `${ms} ms`);
  assert.equal(lost, false, 'a deliberate release is not a loss');
});

test('lease revoked behind the registration\'s back: lost resolves', async (t) => {
  const etcd = await startEtcd();
  t.after(() => etcd.destroy());
  const reg = await registerUpstream({ endpoints: [etcd.endpoint], prefix: P, kind: 'http', service: 'web', id: 'w', addr: '10.0.0.3', port: 80, ttlSec: 2 });
  await etcd.ctl('lease', 'revoke', BigInt(reg.leaseId).toString(16));
  let lost = false;
  void reg.lost.then(() => (lost = true));
  await waitFor(() => lost, { timeoutMs: 8000, what: 'lost to resolve' });
  assert.equal(await get(etcd, reg.key), '');
});

test('bad input is refused before anything is written; deregisterUpstream deletes a key', async (t) => {
  const etcd = await startEtcd();
  t.after(() => etcd.destroy());
  const base = { endpoints: [etcd.endpoint], prefix: P, kind: 'http' as const, service: 'web', id: 'w1', addr: '10.0.0.1', port: 80, ttlSec: 2 };
  const cases: Array<[string, object, Function]> = [
    ['service name', { service: 'web\n    http-request deny' }, RegistryValueError],
    ['id', { id: 'a b' }, RegistryValueError],
    ['addr injection', { addr: '10.0.0.1 # check disabled' }, RegistryValueError],
    ['addr fullwidth', { addr: '１0.0.0.1' }, RegistryValueError],
    ['addr hostname', { addr: 'db.example' }, RegistryValueError],
    ['port', { port: 70000 }, RegistryValueError],
    ['port float', { port: 80.5 }, RegistryValueError],
    ['weight', { weight: 300 }, RegistryValueError],
    ['domain', { domains: ['ok.example', 'ехаmple.com'] }, RegistryValueError],
    ['domain newline', { domains: ['a.example\nb.example'] }, RegistryValueError],
    ['domains on tcp', { kind: 'tcp', domains: ['a.example'] }, ConfigError],
    ['ttl', { ttlSec: 0 }, ConfigError],
    ['endpoints', { endpoints: [] }, ConfigError],
    ['endpoint url', { endpoints: ['127.0.0.1:2379'] }, ConfigError],
    ['prefix', { prefix: 'relative' }, ConfigError],
  ];
  for (const [what, patch, cls] of cases) {
    await assert.rejects(registerUpstream({ ...base, ...patch } as Parameters<typeof registerUpstream>[0]), cls as new () => Error, what);
  }
  assert.equal((await etcd.ctl('get', P, '--prefix', '--keys-only')).trim(), '', 'nothing written');

  await etcd.ctl('put', `${H}/web/upstreams/stale`, '10.0.0.9:80');
  assert.equal(await deregisterUpstream({ endpoints: [etcd.endpoint], prefix: P, kind: 'http', service: 'web', id: 'stale' }), true);
  assert.equal(await get(etcd, `${H}/web/upstreams/stale`), '');
  assert.equal(await deregisterUpstream({ endpoints: [etcd.endpoint], prefix: P, kind: 'http', service: 'web', id: 'stale' }), false);
});

test('registerUpstream against an unreachable etcd fails with EtcdUnavailableError', async (t) => {
  const etcd = await startEtcd();
  t.after(() => etcd.destroy());
  await etcd.kill();
  await assert.rejects(
    registerUpstream({ endpoints: [etcd.endpoint], prefix: P, kind: 'http', service: 'web', id: 'w', addr: '10.0.0.1', port: 80, requestTimeoutMs: 1000 }),
    { code: 'E_ETCD_UNAVAILABLE' },
  );
});

test('etcd with authentication: watcher and registration log in; a wrong password is a ConfigError', async (t) => {
  const etcd = await startEtcd();
  t.after(() => etcd.destroy());
  await etcd.ctl('user', 'add', 'root:rootpw');
  await etcd.ctl('role', 'add', 'root');
  await etcd.ctl('user', 'grant-role', 'root', 'root');
  await etcd.ctl('auth', 'enable');
  const auth = { username: 'root', password: 'rootpw' };
  const watcher = new RegistryWatcher({ endpoints: [etcd.endpoint], prefix: P, auth });
  await watcher.start();
  const reg = await registerUpstream({ endpoints: [etcd.endpoint], prefix: P, kind: 'http', service: 'web', id: 'w', addr: '10.0.0.1', port: 80, ttlSec: 2, auth });
  await waitFor(() => watcher.current?.registry.http.get('web')?.upstreams.has('w') === true, { timeoutMs: 5000, what: 'authenticated watch sees the registration' });
  await reg.close();
  await waitFor(() => watcher.current?.registry.http.get('web') === undefined, { timeoutMs: 5000, what: 'removal seen' });
  await watcher.stop();
  await assert.rejects(
    registerUpstream({ endpoints: [etcd.endpoint], prefix: P, kind: 'http', service: 'web', id: 'w', addr: '10.0.0.1', port: 80, auth: { username: 'root', password: 'wrong' } }),
    ConfigError,
  );
  assert.equal((await etcd.ctl('--user', 'root:rootpw', 'get', P, '--prefix', '--keys-only')).trim(), '', 'nothing written');
});
