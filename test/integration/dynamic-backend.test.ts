/**
 * A new service and a removed one, under load, against the HAProxy of the leg: on a version
 * whose capabilities include `dynamicBackends` (3.4+) both happen at runtime with no reload
 * (`add backend ... from`, `publish`; `unpublish`, `del server`s, `del backend`); on older
 * ones the new service costs exactly one reload and the removal none (its backend waits for
 * the next reload). Reloads are read from HAProxy's master CLI.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { readFile } from 'node:fs/promises';
import {
  startEtcd,
  startBackend,
  runLoad,
  tempDir,
  removeDir,
  waitFor,
  sleep,
  percentile,
  startUpdater,
  masterView,
  killHaproxy,
  socketCommand,
  type EtcdHandle,
  type Backend,
  type LoadResult,
  type UpdaterHandle,
} from '../../testkit/index.js';
import { capabilitiesFor, parseBackendList, parseInfo } from '../../src/runtime/index.js';

const P = '/haproxy-discover';
let etcd: EtcdHandle;
let stateDir: string;
let updater: UpdaterHandle;
let web: Backend;
let dynamic = false;
const pool: Backend[] = [];

async function get(host: string): Promise<string> {
  const r = await runLoad({ url: `http://127.0.0.1:${updater.httpPort}/`, host, maxRequests: 1, concurrency: 1, okStatus: () => true });
  return Object.keys(r.bodies)[0] ?? '';
}
const reloads = async () => (await masterView(updater.masterSocket)).reloads;
const backends = async () => parseBackendList(await socketCommand(updater.adminSocket, 'show backend'));
const summary = (r: LoadResult) => `ok=${r.ok} failed=${r.failed} ${JSON.stringify(r.failures)} p99=${percentile(r.latencies, 99).toFixed(1)}ms`;

function load(host: string, signal: AbortSignal): Promise<LoadResult> {
  return runLoad({ url: `http://127.0.0.1:${updater.httpPort}/`, host, concurrency: 4, durationMs: 30_000, maxRequests: 30_000, signal });
}

before(async () => {
  etcd = await startEtcd();
  stateDir = await tempDir('hu-dynbe-');
  web = await startBackend('web-0');
  for (let i = 0; i < 2; i++) pool.push(await startBackend(`new-${i}`));
  await etcd.ctl('put', `${P}/http-services/web/domain`, 'web.test');
  await etcd.ctl('put', `${P}/http-services/web/upstreams/w0`, `127.0.0.1:${web.port}`);
  // This file is about removing a service at runtime, not about the mass-deletion hold
  // (guardrails-hold.test.ts), which would hold the removal of a serving service's last upstream.
  updater = await startUpdater({ etcdEndpoint: etcd.endpoint, stateDir, extraArgs: ['--max-removal', '100%'] });
  await waitFor(async () => (await get('web.test')).startsWith('web-'), { what: 'web routed', timeoutMs: 15_000 });
  const info = parseInfo(await socketCommand(updater.adminSocket, 'show info'));
  dynamic = capabilitiesFor(info.Version).capabilities.dynamicBackends;
});

after(async () => {
  await updater?.stop();
  await killHaproxy(path.join(stateDir, 'master.sock'));
  await Promise.all([web, ...pool].filter(Boolean).map((b) => b.close()));
  await etcd?.destroy();
  await removeDir(stateDir);
});

test('new service under load: routed with 0 reloads on dynamic backends (else exactly 1), 0 failed requests', async () => {
  const before = await reloads();
  const abort = new AbortController();
  const running = load('web.test', abort.signal);
  for (const [i, b] of pool.entries()) await etcd.ctl('put', `${P}/http-services/fresh/upstreams/n${i}`, `127.0.0.1:${b.port}`);
  await etcd.ctl('put', `${P}/http-services/fresh/domain`, 'fresh.test');
  await waitFor(async () => (await get('fresh.test')).startsWith('new-'), { what: 'fresh.test routed', timeoutMs: 20_000 });
  // Traffic on the new service too, once routed: none of it may fail.
  const onNew = await runLoad({ url: `http://127.0.0.1:${updater.httpPort}/`, host: 'fresh.test', concurrency: 2, maxRequests: 400, durationMs: 10_000 });
  // Passes after the add (disk rewrite, re-observation) must not find a reload to do.
  await sleep(2000);
  abort.abort();
  const r = await running;
  const after = await reloads();
  assert.equal(r.failed, 0, summary(r));
  assert.ok(r.ok > 50, `traffic flowed: ${summary(r)}`);
  assert.equal(onNew.failed, 0, summary(onNew));
  assert.equal(after - before, dynamic ? 0 : 1, `reloads ${before} -> ${after} (dynamic backends: ${dynamic})`);
  assert.ok((await backends()).includes('http-fresh'));
  const cfg = await readFile(path.join(stateDir, 'haproxy.cfg'), 'utf8');
  assert.match(cfg, /^backend http-fresh$/m, 'the config on disk has the new backend, so a later reload keeps it');
});

test('a later structural reload keeps the runtime-added backend', async () => {
  const before = await reloads();
  await etcd.ctl('put', `${P}/http-services/web/options`, JSON.stringify({ healthPath: '/health' }));
  await waitFor(async () => (await reloads()) > before, { what: 'structural reload', timeoutMs: 20_000 });
  await waitFor(async () => (await get('web.test')).startsWith('web-'), { what: 'web routed after the reload' });
  // The new worker builds http-fresh from the file; its slots come back from the state file or
  // the next pass (hold until healthy): routed again without another reload.
  await waitFor(async () => (await get('fresh.test')).startsWith('new-'), { what: 'fresh.test routed after the reload', timeoutMs: 15_000 });
  await sleep(1500);
  assert.equal(await reloads(), before + 1, 'one reload for the structural change, none after it');
});

test('removed service under load: leaves with 0 reloads; on dynamic backends its backend is deleted at runtime', async () => {
  const before = await reloads();
  const abort = new AbortController();
  const running = load('web.test', abort.signal);
  await etcd.ctl('del', `${P}/http-services/fresh/`, '--prefix');
  await waitFor(async () => !(await get('fresh.test')).startsWith('new-'), { what: 'fresh.test no longer routed', timeoutMs: 20_000 });
  if (dynamic) await waitFor(async () => !(await backends()).includes('http-fresh'), { what: 'http-fresh deleted at runtime', timeoutMs: 20_000 });
  await sleep(1500);
  abort.abort();
  const r = await running;
  assert.equal(r.failed, 0, summary(r));
  assert.equal(await reloads(), before, 'no reload for a removed service');
  const cfg = await readFile(path.join(stateDir, 'haproxy.cfg'), 'utf8');
  if (dynamic) assert.doesNotMatch(cfg, /^backend http-fresh$/m, 'the config on disk dropped it too');
});
