/**
 * Guardrails, issue #12 items 1 and 8, on real etcd + the real `haproxy-updater run`
 * (managed HAProxy) + real upstreams under bounded load:
 * - every upstream deleted at once is held (0 failed requests, /readyz 503 naming the hold,
 *   haproxy_updater_registry_held 1), lifted when the keys come back, applied by
 *   `release-hold`; additions and modifications go through while held;
 * - /readyz turns 200 only once every service has a serving server (a cold start whose
 *   checks take time, traffic sent only after /readyz: 0 failed requests), or after
 *   --ready-grace with the services still without one in its body, as `status` shows.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import path from 'node:path';
import {
  BIN,
  startEtcd,
  startBackend,
  runLoad,
  tempDir,
  removeDir,
  waitFor,
  freePort,
  startUpdater,
  killHaproxy,
  socketCommand,
  type EtcdHandle,
  type Backend,
  type LoadResult,
  type UpdaterHandle,
} from '../../testkit/index.js';
import { parseServersState, isMaint } from '../../src/runtime/servers.js';

const P = '/haproxy-discover';
const cleanups: Array<() => Promise<unknown>> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => undefined);
});

async function setup(prefix: string): Promise<{ etcd: EtcdHandle; stateDir: string }> {
  const etcd = await startEtcd();
  cleanups.push(() => etcd.destroy());
  const stateDir = await tempDir(prefix);
  cleanups.push(() => removeDir(stateDir));
  cleanups.push(() => killHaproxy(path.join(stateDir, 'master.sock')));
  return { etcd, stateDir };
}

async function backends(prefix: string, n: number, delayMs = 0): Promise<Backend[]> {
  const out: Backend[] = [];
  for (let i = 0; i < n; i++) out.push(await startBackend(`${prefix}-${i}`, { delayMs }));
  cleanups.push(() => Promise.all(out.map((b) => b.close())));
  return out;
}

async function updaterOf(etcd: EtcdHandle, stateDir: string, extra: string[] = [], waitReady = true): Promise<UpdaterHandle> {
  const u = await startUpdater({ etcdEndpoint: etcd.endpoint, stateDir, extraArgs: extra, waitReady });
  cleanups.push(() => u.stop());
  return u;
}

function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { timeout: 60_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

async function metric(u: UpdaterHandle, name: string): Promise<number | null> {
  const m = new RegExp(`^${name} (\\S+)$`, 'm').exec((await u.get('/metrics')).body);
  return m ? Number(m[1]) : null;
}

/** `addr:port` of the servers HAProxy has in `backend` that are not in maintenance. */
async function activeAddrs(u: UpdaterHandle, backend: string): Promise<string[]> {
  const rows = parseServersState(await socketCommand(u.adminSocket, `show servers state ${backend}`));
  return rows.filter((r) => !isMaint(r)).map((r) => `${r.srvAddr}:${r.srvPort}`).sort();
}

/** Servers of `backend` HAProxy runs as UP (srv_op_state 2) and not in maintenance. */
async function upCount(u: UpdaterHandle, backend: string): Promise<number> {
  const rows = parseServersState(await socketCommand(u.adminSocket, `show servers state ${backend}`));
  return rows.filter((r) => !isMaint(r) && r.srvOpState === 2).length;
}

function loadOn(u: UpdaterHandle, host: string, signal: AbortSignal): Promise<LoadResult> {
  return runLoad({ url: `http://127.0.0.1:${u.httpPort}/`, host, concurrency: 2, durationMs: 60_000, maxRequests: 40_000, signal });
}

const put = (etcd: EtcdHandle, key: string, value: string) => etcd.ctl('put', `${P}/${key}`, value);

test('every upstream deleted at once is held; restored it lifts; adds/modifies go through; release-hold applies the scale-down', async () => {
  const { etcd, stateDir } = await setup('hu-hold-');
  const web = await backends('web', 4);
  const api = await backends('api', 2);
  await put(etcd, 'http-services/web/domain', 'web.test');
  await put(etcd, 'http-services/api/domain', 'api.test');
  const register = async () => {
    for (const b of web) await put(etcd, `http-services/web/upstreams/${b.id}`, `127.0.0.1:${b.port}`);
    for (const b of api) await put(etcd, `http-services/api/upstreams/${b.id}`, `127.0.0.1:${b.port}`);
  };
  await register();
  const u = await updaterOf(etcd, stateDir);
  const webAddrs = web.map((b) => `127.0.0.1:${b.port}`).sort();
  assert.deepEqual(await activeAddrs(u, 'http-web'), webAddrs, 'ready: all four web upstreams in HAProxy');
  // Ready needs one serving server per service; the share counts every one that serves.
  await waitFor(async () => (await upCount(u, 'http-web')) === 4 && (await upCount(u, 'http-api')) === 2, { what: 'all six upstreams UP', timeoutMs: 10_000 });
  assert.equal(await metric(u, 'haproxy_updater_registry_held'), 0);

  const abort = new AbortController();
  const loads = [loadOn(u, 'web.test', abort.signal), loadOn(u, 'api.test', abort.signal)];
  try {
    // An `etcdctl del --prefix` slip: every upstream gone in one transaction.
    await etcd.ctl('del', `${P}/http-services/`, '--prefix');
    const deletedAt = Date.now();
    const held = await waitFor(async () => {
      const r = await u.get('/readyz');
      return r.status === 503 && /registry update held/.test(r.body) ? r.body : null;
    }, { what: '/readyz 503 naming the hold', timeoutMs: 5000, intervalMs: 20 });
    assert.ok(Date.now() - deletedAt < 2000, `/readyz 503 within 2 s (took ${Date.now() - deletedAt} ms)`);
    assert.match(held!, /removes 6 of 6 serving upstreams \(more than --max-removal 50%\)/);
    assert.match(held!, /haproxy-updater release-hold/);
    assert.equal(await metric(u, 'haproxy_updater_registry_held'), 1);
    // Let the held registry sit through a few passes (verify interval 1 s) under load.
    await new Promise((r) => setTimeout(r, 2500));
    assert.deepEqual(await activeAddrs(u, 'http-web'), webAddrs, 'HAProxy keeps the last upstreams');

    // Restored (e.g. the registrars write again): lifted, serving and ready.
    await put(etcd, 'http-services/web/domain', 'web.test');
    await put(etcd, 'http-services/api/domain', 'api.test');
    await register();
    await waitFor(async () => (await u.get('/readyz')).status === 200, { what: '/readyz 200 after the restore', timeoutMs: 10_000 });
    assert.equal(await metric(u, 'haproxy_updater_registry_held'), 0);
  } finally {
    abort.abort();
  }
  const results = await Promise.all(loads);
  for (const [i, r] of results.entries()) {
    assert.ok(r.ok > 100, `load ${i} ran (${r.ok} ok)`);
    assert.equal(r.failed, 0, `load ${i}: no failed request while held: ${JSON.stringify(r.failures)}`);
  }
  assert.deepEqual(await activeAddrs(u, 'http-web'), webAddrs);

  // Held again by a scale-down of web from 4 to 1 (3 of 6 serving plus api's 2 = 5 of 6),
  // while a new web upstream and a weight change of the kept one are applied meanwhile.
  const extra = await backends('extra', 1);
  await etcd.ctl('del', `${P}/http-services/api/`, '--prefix');
  for (const b of web.slice(1)) await etcd.ctl('del', `${P}/http-services/web/upstreams/${b.id}`);
  await waitFor(async () => (await metric(u, 'haproxy_updater_registry_held')) === 1, { what: 'scale-down held', timeoutMs: 5000 });
  await put(etcd, `http-services/web/upstreams/${extra[0]!.id}`, `127.0.0.1:${extra[0]!.port}`);
  await put(etcd, `http-services/web/upstreams/${web[0]!.id}`, JSON.stringify({ addr: `127.0.0.1:${web[0]!.port}`, weight: 7 }));
  await waitFor(async () => (await activeAddrs(u, 'http-web')).includes(`127.0.0.1:${extra[0]!.port}`), { what: 'addition applied while held', timeoutMs: 10_000 });
  await waitFor(
    async () => parseServersState(await socketCommand(u.adminSocket, 'show servers state http-web')).some((r) => r.srvPort === web[0]!.port && r.srvUweight === 7),
    { what: 'weight change applied while held', timeoutMs: 10_000 },
  );
  await waitFor(async () => {
    const hits = extra[0]!.hits;
    await runLoad({ url: `http://127.0.0.1:${u.httpPort}/`, host: 'web.test', concurrency: 1, maxRequests: 20 });
    return extra[0]!.hits > hits;
  }, { what: 'the added upstream takes traffic while held', timeoutMs: 10_000 });
  assert.equal(await metric(u, 'haproxy_updater_registry_held'), 1, 'still held: the removals are not applied');
  assert.deepEqual(await activeAddrs(u, 'http-web'), [...webAddrs, `127.0.0.1:${extra[0]!.port}`].sort());

  // The operator confirms: the removals are applied (drain, then out of HAProxy).
  const released = await cli(['release-hold', '--listen', `127.0.0.1:${u.listenPort}`]);
  assert.equal(released.code, 0, released.stderr);
  assert.match(released.stdout, /^released: registry update held/);
  const remaining = [`127.0.0.1:${web[0]!.port}`, `127.0.0.1:${extra[0]!.port}`].sort();
  await waitFor(async () => JSON.stringify(await activeAddrs(u, 'http-web')) === JSON.stringify(remaining), { what: 'removed web upstreams leave HAProxy', timeoutMs: 15_000 });
  await waitFor(async () => (await activeAddrs(u, 'http-api').catch(() => [])).length === 0, { what: 'api upstreams leave HAProxy', timeoutMs: 15_000 });
  assert.equal(await metric(u, 'haproxy_updater_registry_held'), 0);
  // A wildcard --listen (the compose sidecar's HAPROXY_UPDATER_LISTEN=0.0.0.0:9180) is reached on loopback.
  const again = await cli(['release-hold', '--listen', `0.0.0.0:${u.listenPort}`]);
  assert.equal(again.code, 0);
  assert.match(again.stdout, /nothing is held/);

  // No daemon there: a clear error naming the flag.
  const nobody = await cli(['release-hold', '--listen', `127.0.0.1:${await freePort()}`]);
  assert.equal(nobody.code, 1);
  assert.match(nobody.stderr, /release-hold: no daemon answers on 127\.0\.0\.1:\d+ \(ECONNREFUSED\) \(--listen, HAPROXY_UPDATER_LISTEN\)/);
});

test('cold start: /readyz waits for serving servers (checks that take time); traffic sent after it sees no failure; a dead service is listed after --ready-grace', async () => {
  const { etcd, stateDir } = await setup('hu-ready-');
  // Each check answers after 400 ms and two must pass (rise 2): the servers come UP well after HAProxy starts.
  const cold = await backends('cold', 4);
  await put(etcd, 'http-services/cold/domain', 'cold.test');
  await put(etcd, 'http-services/cold/options', JSON.stringify({ healthPath: '/slow?ms=400' }));
  for (const b of cold) await put(etcd, `http-services/cold/upstreams/${b.id}`, `127.0.0.1:${b.port}`);
  const u = await updaterOf(etcd, stateDir, ['--ready-grace', '20s'], false);
  const seen: string[] = [];
  await waitFor(async () => {
    const r = await u.get('/readyz').catch(() => null);
    if (r && r.status !== 200) seen.push(r.body);
    return r?.status === 200;
  }, { what: '/readyz 200', timeoutMs: 30_000, intervalMs: 20 });
  assert.ok(
    seen.some((b) => /http\/cold: no serving upstream in HAProxy \(4 registered, none UP\); waiting up to \d+s more \(--ready-grace\)/.test(b)),
    `/readyz named the service it waited for: ${JSON.stringify(seen.slice(-3))}`,
  );
  // A rollout gated on /readyz: its first request must already be served.
  const r = await runLoad({ url: `http://127.0.0.1:${u.httpPort}/`, host: 'cold.test', concurrency: 4, durationMs: 2000, maxRequests: 5000 });
  assert.ok(r.ok > 50, `load ran (${r.ok} ok)`);
  assert.equal(r.failed, 0, `no failed request after /readyz: ${JSON.stringify(r.failures)}`);
  assert.equal(await metric(u, 'haproxy_updater_services_unserved'), 0);

  // A service whose only upstream never answers: 503 within the grace, then 200 listing it.
  await u.stop();
  const u2 = await updaterOf(etcd, stateDir, ['--ready-grace', '3s']);
  const deadPort = await freePort();
  await put(etcd, 'http-services/dead/domain', 'dead.test');
  await put(etcd, `http-services/dead/upstreams/d1`, `127.0.0.1:${deadPort}`);
  const waiting = await waitFor(async () => {
    const x = await u2.get('/readyz');
    return x.status === 503 && /http\/dead: no serving upstream/.test(x.body) ? x.body : null;
  }, { what: '/readyz 503 for the new unserved service', timeoutMs: 10_000, intervalMs: 20 });
  assert.match(waiting!, /--ready-grace/);
  const listed = await waitFor(async () => {
    const x = await u2.get('/readyz');
    return x.status === 200 ? x.body : null;
  }, { what: '/readyz 200 after the grace', timeoutMs: 10_000, intervalMs: 100 });
  assert.equal(listed, 'ready\nhttp/dead: no serving upstream in HAProxy (1 registered, none UP)');
  assert.equal(await metric(u2, 'haproxy_updater_services_unserved'), 1);
  const status = await cli(['status', '--etcd', etcd.endpoint, '--state-dir', stateDir]);
  assert.equal(status.code, 0, status.stderr);
  assert.match(status.stdout, /^unserved: 1 service\(s\) with registered upstreams and none serving\n {2}http\/dead: no serving upstream in HAProxy \(1 registered, none UP\)$/m);
  // The upstream comes to life: served, listed no more.
  const alive = await startBackend('dead-1', { port: deadPort });
  cleanups.push(() => alive.close());
  await waitFor(async () => (await metric(u2, 'haproxy_updater_services_unserved')) === 0, { what: 'dead service served', timeoutMs: 15_000 });
  assert.equal((await u2.get('/readyz')).body, 'ready');
  const status2 = await cli(['status', '--etcd', etcd.endpoint, '--state-dir', stateDir]);
  assert.match(status2.stdout, /^serving: every service with registered upstreams has a serving server$/m);
});
