/**
 * Crash-safe applied state (issue 12, item 4), with real etcd, the real updater (managed
 * HAProxy) and real upstreams:
 * - the updater SIGKILLed between renaming a new haproxy.cfg into place and the master reload
 *   (test hook HAPROXY_UPDATER_TEST_CRASH_AT=after-rename): the restarted updater sees the
 *   file was never confirmed running, reloads, and routes the new service;
 * - a map file and the server-state file made stale behind the updater's back are rewritten
 *   by the next verify pass (no reload), so a HAProxy started from them would route as now.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import {
  startEtcd,
  startBackend,
  startUpdater,
  runLoad,
  tempDir,
  removeDir,
  waitFor,
  masterView,
  killHaproxy,
  socketCommand,
  hasExited,
  type EtcdHandle,
  type UpdaterHandle,
} from '../../testkit/index.js';
import { parseServersState } from '../../src/runtime/index.js';

const P = '/haproxy-discover';
const cleanups: Array<() => Promise<unknown>> = [];
after(async () => {
  for (const fn of cleanups.reverse()) await fn().catch(() => undefined);
});

async function body(host: string, port: number): Promise<string> {
  const r = await runLoad({ url: `http://127.0.0.1:${port}/`, host, maxRequests: 1, concurrency: 1, okStatus: () => true });
  return Object.keys(r.bodies)[0] ?? '';
}

/** `show proc`; the 2.6 master re-executes itself on reload, so its socket can refuse a connection for a moment. */
const master = (socket: string) => waitFor(() => masterView(socket), { what: `the master CLI on ${socket}`, timeoutMs: 10_000 });

const sha256 = (text: string) => createHash('sha256').update(text).digest('hex');

test('SIGKILL between rename and reload: the restarted updater reloads and routes the new service; stale map and server-state files are rewritten by a verify pass', async (t) => {
  const etcd: EtcdHandle = await startEtcd();
  cleanups.push(() => etcd.destroy());
  const stateDir = await tempDir('hu-crash-');
  cleanups.push(() => removeDir(stateDir));
  cleanups.push(() => killHaproxy(path.join(stateDir, 'master.sock')));
  const web = await startBackend('web-0');
  const api = await startBackend('api-0');
  cleanups.push(() => web.close(), () => api.close());
  await etcd.ctl('put', `${P}/http-services/web/domain`, 'web.test');
  await etcd.ctl('put', `${P}/http-services/web/upstreams/w0`, `127.0.0.1:${web.port}`);

  const cfgPath = path.join(stateDir, 'haproxy.cfg');
  const recorded = async () => JSON.parse(await readFile(path.join(stateDir, 'applied.json'), 'utf8')) as { sha256: string; by: string };
  let ports: { httpPort?: number; httpsPort?: number; listenPort?: number } = {};

  /**
   * Starts an updater with the after-rename hook, makes `change` (which needs a reload), checks
   * it died between rename and reload, then starts one without the hook and returns it with
   * HAProxy's reload counter from before the change.
   */
  async function crashOn(change: () => Promise<void>, fileShows: RegExp): Promise<{ updater: UpdaterHandle; reloadsBefore: number; masterPid: number }> {
    const crashing = await startUpdater({ etcdEndpoint: etcd.endpoint, stateDir, ...ports, env: { HAPROXY_UPDATER_TEST_CRASH_AT: 'after-rename' } });
    cleanups.push(() => crashing.stop());
    ports = { httpPort: crashing.httpPort, httpsPort: crashing.httpsPort, listenPort: crashing.listenPort };
    const before = await master(crashing.masterSocket);
    const confirmedBefore = await recorded();
    assert.equal(confirmedBefore.sha256, sha256(await readFile(cfgPath, 'utf8')), 'the config HAProxy runs is recorded');
    await change();
    await waitFor(() => hasExited(crashing.proc), { what: 'the updater killed by the after-rename hook', timeoutMs: 15_000 });
    assert.equal(crashing.proc.child.signalCode, 'SIGKILL');
    assert.match(await readFile(cfgPath, 'utf8'), fileShows, 'the new config was renamed into place');
    const crashed = await master(crashing.masterSocket);
    assert.deepEqual([crashed.masterPid, crashed.reloads], [before.masterPid, before.reloads], 'HAProxy still runs the old config, not reloaded');
    // (On 3.4 the record may have moved on before the crash: the service's first key alone is added
    // at runtime and recorded; what matters is that the renamed, unreloaded file is not.)
    assert.notEqual((await recorded()).sha256, sha256(await readFile(cfgPath, 'utf8')), 'the unconfirmed config was not recorded as running');
    // Restarted without the hook: adopts HAProxy, sees the unconfirmed file, reloads.
    const updater = await startUpdater({ etcdEndpoint: etcd.endpoint, stateDir, ...ports });
    cleanups.push(() => updater.stop());
    return { updater, reloadsBefore: before.reloads, masterPid: before.masterPid };
  }

  async function converged(updater: UpdaterHandle, c: { reloadsBefore: number; masterPid: number }): Promise<number> {
    const view = await master(updater.masterSocket);
    assert.equal(view.masterPid, c.masterPid, 'same HAProxy adopted');
    assert.ok(view.reloads > c.reloadsBefore, `the restarted updater reloaded (${c.reloadsBefore} → ${view.reloads})`);
    // The record follows the master's confirmation, which routing may show a moment earlier.
    const confirmed = await waitFor(async () => {
      const r = await recorded();
      return r.sha256 === sha256(await readFile(cfgPath, 'utf8')) ? r : null;
    }, { what: 'the reloaded config recorded in applied.json', timeoutMs: 10_000 });
    assert.equal(confirmed?.by, 'reload');
    return view.reloads;
  }

  // 1. A new service (with a health check: a reload on every version).
  const first = await crashOn(async () => {
    await etcd.ctl('put', `${P}/http-services/api/domain`, 'api.test');
    await etcd.ctl('put', `${P}/http-services/api/options`, JSON.stringify({ healthPath: '/health' }));
    await etcd.ctl('put', `${P}/http-services/api/upstreams/a0`, `127.0.0.1:${api.port}`);
    await waitFor(async () => /^backend http-api$/m.test(await readFile(cfgPath, 'utf8')), { what: 'new config on disk', timeoutMs: 15_000 }).catch(() => undefined);
    assert.notEqual(await body('api.test', ports.httpPort!), 'api-0', 'api not routed by the old config');
  }, /^backend http-api$/m);
  await waitFor(async () => (await body('api.test', first.updater.httpPort)) === 'api-0', { what: 'api routed after the restart', timeoutMs: 20_000 });
  assert.equal(await body('web.test', first.updater.httpPort), 'web-0');
  await converged(first.updater, first);
  await first.updater.kill();

  // 2. A change to an existing backend: HAProxy shows the backend either way, so only the
  //    record tells the restarted updater that the change is not running yet.
  const apiPath = async (updater: UpdaterHandle) => {
    const r = await runLoad({ url: `http://127.0.0.1:${updater.httpPort}/api/v1`, host: 'web.test', maxRequests: 1, concurrency: 1, okStatus: () => true });
    return Object.keys(r.bodies)[0] ?? '';
  };
  const second = await crashOn(async () => {
    assert.equal(await apiPath(first.updater), 'web-0', 'before the change /api/ goes by Host to web');
    await etcd.ctl('put', `${P}/http-services/api/url_reg`, '^/api/');
  }, /api\.pat/);
  const updater = second.updater;
  await waitFor(async () => (await apiPath(updater)) === 'api-0', { what: 'url_reg of api in force after the restart', timeoutMs: 20_000 });
  const reloads = await converged(updater, second);

  // A map file made stale behind the updater's back (as ENOSPC or a kill after `add map` leaves it).
  const hostsMap = path.join(stateDir, 'hosts.map');
  const goodMap = await readFile(hostsMap, 'utf8');
  assert.match(goodMap, /^api\.test http-api$/m);
  assert.match(goodMap, /^web\.test http-web$/m);
  await writeFile(hostsMap, 'web.test http-web\nold.test http-web\n');
  const mapBack = await waitFor(async () => {
    const text = await readFile(hostsMap, 'utf8');
    return text === goodMap ? text : '';
  }, { what: 'hosts.map rewritten by a verify pass', timeoutMs: 10_000 });
  assert.equal(mapBack, goodMap);

  // The server-state file with the web slot pointing elsewhere (an old route a restart would load).
  const stateFile = path.join(stateDir, 'server-state');
  const slotOf = (text: string) => parseServersState(text).find((r) => r.beName === 'http-web' && r.srvAddr === '127.0.0.1' && r.srvPort === web.port);
  const live = await socketCommand(updater.adminSocket, 'show servers state');
  assert.ok(slotOf(live), live);
  await writeFile(stateFile, live.replace(new RegExp(` 127\\.0\\.0\\.1 (.*) ${web.port} `), ' 127.0.0.9 $1 9 '));
  assert.equal(slotOf(await readFile(stateFile, 'utf8')), undefined, 'the test made the file stale');
  await waitFor(async () => slotOf(await readFile(stateFile, 'utf8')), { what: 'server-state rewritten by a verify pass', timeoutMs: 10_000 });

  const end = await master(updater.masterSocket);
  assert.equal(end.reloads, reloads, 'file repairs cost no reload');
  t.diagnostic(`HAProxy reloads: ${first.reloadsBefore} before the first crash, ${reloads} at the end`);
});
