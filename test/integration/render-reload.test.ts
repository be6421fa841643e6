/**
 * The reload procedure against a real HAProxy 2.6 (master-worker) with guard `none`:
 * - reloads under a bounded load of new connections lose no request, and runtime-set slot
 *   addresses survive them through the server-state file;
 * - a render `haproxy -c` refuses changes nothing, traffic continues;
 * - a new TCP port taken by another process (passes `haproxy -c`, would fail at startup) is
 *   refused before the reload, traffic continues;
 * - a reload HAProxy fails (config swapped between validation and reload) is rolled back,
 *   traffic continues, the master ends with `failed: 0`.
 * Uses the real MasterClient and RuntimeClient from src/runtime.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import path from 'node:path';
import { readFile, writeFile } from 'node:fs/promises';
import { DEFAULT_OPTIONS, type HttpService, type Registry, type TcpService } from '../../src/model.js';
import { ConfigInvalidError, ReloadFailedError } from '../../src/errors.js';
import { MasterClient, RuntimeClient } from '../../src/runtime/index.js';
import { defaultSettings, renderConfig, type RenderSettings, type Rendered } from '../../src/render/index.js';
import { NoGuard, Reloader, writeRendered } from '../../src/reload/index.js';
import { haproxyBin, freePort, percentile, removeDir, runLoad, socketCommand, startBackend, startHaproxy, tempDir, waitFor, type LoadResult } from '../../testkit/index.js';

function http(name: string, domains: string[]): HttpService {
  return { kind: 'http', name, upstreams: new Map(), domains, urlReg: null, sslPassthrough: false, options: { ...DEFAULT_OPTIONS, healthPath: '/health' } };
}
function registry(http_: HttpService[], tcp_: TcpService[] = []): Registry {
  return { revision: '1', http: new Map(http_.map((s) => [s.name, s])), tcp: new Map(tcp_.map((s) => [s.name, s])) };
}

interface Env {
  dir: string;
  httpPort: number;
  settings: RenderSettings;
  render(reg: Registry): Rendered;
  reloader: Reloader;
  master: MasterClient;
  adminSocket: string;
  cfgPath: string;
  backendPort: number;
}

/** HAProxy running the rendered config of `web` (web.test), slot s1 set at runtime to a live backend. */
async function start(t: { after(fn: () => Promise<void>): void }): Promise<Env> {
  const dir = await tempDir('hu-render-it-');
  const httpPort = await freePort();
  const settings: RenderSettings = { ...defaultSettings(dir), bindAddress: '127.0.0.1', httpPort, httpsPort: null };
  const render = (reg: Registry) => renderConfig({ registry: reg, capacity: new Map(), settings });
  const cfgPath = path.join(dir, 'haproxy.cfg');
  const v1 = render(registry([http('web', ['web.test'])]));
  await writeRendered(v1, cfgPath, { haproxyBin: haproxyBin() });
  const be = await startBackend('one');
  const hp = await startHaproxy(v1.config, { dir });
  t.after(async () => {
    await hp.stop();
    await be.close();
    await removeDir(dir);
  });
  await waitFor(() => socketCommand(settings.adminSocket, 'show info').then((r) => r.includes('Pid:')), { what: 'admin socket' });
  // Runtime slot assignment, as src/runtime would do it.
  await socketCommand(settings.adminSocket, `set server http-web/s1 addr 127.0.0.1 port ${be.port}`);
  await socketCommand(settings.adminSocket, 'set server http-web/s1 state ready');
  const master = new MasterClient({ path: hp.masterSocket });
  const reloader = new Reloader({
    haproxyBin: haproxyBin(),
    master,
    runtime: new RuntimeClient({ path: settings.adminSocket }),
    guard: new NoGuard(),
    cfgPath,
    serverStateFile: settings.serverStateFile,
    guardPorts: () => [httpPort],
  });
  const warm = await runLoad({ url: `http://127.0.0.1:${httpPort}/`, host: 'web.test', maxRequests: 10 });
  assert.equal(warm.failed, 0, `warm-up: ${JSON.stringify(warm.failures)}`);
  return { dir, httpPort, settings, render, reloader, master, adminSocket: settings.adminSocket, cfgPath, backendPort: be.port };
}

function summary(r: LoadResult): string {
  return `requests=${r.ok + r.failed} ok=${r.ok} failed=${r.failed} failures=${JSON.stringify(r.failures)} p50=${percentile(r.latencies, 50).toFixed(1)}ms p99=${percentile(r.latencies, 99).toFixed(1)}ms worst=${Math.max(0, ...r.latencies).toFixed(1)}ms`;
}

/** Load of new connections (one request each) until `stop` aborts, bounded by count and time. */
function load(env: Env, stop: AbortController): Promise<LoadResult> {
  return runLoad({ url: `http://127.0.0.1:${env.httpPort}/`, host: 'web.test', concurrency: 4, durationMs: 20_000, maxRequests: 20_000, signal: stop.signal });
}

test('guard none: reloads under load lose no request; runtime slot addresses survive through the state file', async (t) => {
  const env = await start(t);
  const stop = new AbortController();
  const loading = load(env, stop);
  const services = [http('web', ['web.test'])];
  const durations: number[] = [];
  try {
    await new Promise((r) => setTimeout(r, 300));
    for (let i = 1; i <= 5; i++) {
      // Each new service sorts before `web`, so backend ids shift: state is matched by name.
      services.push(http(`a${i}`, [`a${i}.test`]));
      const res = await env.reloader.reload(env.render(registry(services)), [`service-added:http-a${i}`]);
      durations.push(res.durationMs);
      await new Promise((r) => setTimeout(r, 300));
    }
  } finally {
    stop.abort();
  }
  const r = await loading;
  const proc = await env.master.showProc();
  const line = summary(r);
  t.diagnostic(`guard none, 5 reloads (${durations.join('/')} ms): ${line}`);
  console.log(`[render-reload] guard=none reloads=5 ${line}`);
  // Hundreds of new connections across the reloads: the test is not vacuous even on a
  // loaded 2-core machine (the count, not the rate, is what matters here).
  assert.ok(r.ok > 200, `enough load: ${line}`);
  assert.equal(r.failed, 0, line);
  assert.deepEqual(Object.keys(r.bodies), ['one']);
  assert.equal(proc.failed, 0);
  assert.ok(proc.reloads >= 5);
  // The slot's runtime address and port are back after every reload.
  const state = await socketCommand(env.adminSocket, 'show servers state http-web');
  // srv_op_state 2 (running), admin state without FMAINT (notes §6: ready slots come back ready).
  assert.match(state, new RegExp(`http-web \\d+ s1 127\\.0\\.0\\.1 2 [04] .* slot\\.invalid ${env.backendPort} `), state);
  const after = await runLoad({ url: `http://127.0.0.1:${env.httpPort}/`, host: 'web.test', maxRequests: 20 });
  assert.equal(after.bodies.one, 20);
});

test('a render haproxy -c refuses changes nothing; traffic continues', async (t) => {
  const env = await start(t);
  const before = await readFile(env.cfgPath, 'utf8');
  const reloadsBefore = (await env.master.showProc()).reloads;
  const stop = new AbortController();
  const loading = load(env, stop);
  try {
    await new Promise((r) => setTimeout(r, 300));
    const bad = env.render(registry([http('web', ['web.test']), http('b', ['b.test'])]));
    bad.config += '\nbackend broken\n    bogus-keyword\n';
    await assert.rejects(env.reloader.reload(bad, ['bad']), ConfigInvalidError);
    await new Promise((r) => setTimeout(r, 300));
  } finally {
    stop.abort();
  }
  const r = await loading;
  t.diagnostic(`invalid render: ${summary(r)}`);
  assert.equal(r.failed, 0, summary(r));
  assert.equal(await readFile(env.cfgPath, 'utf8'), before);
  assert.equal(await readFile(env.settings.hostsMap, 'utf8'), 'web.test http-web\n');
  assert.equal((await env.master.showProc()).reloads, reloadsBefore);
});

test('a new port taken by another process is refused before the reload; traffic continues', async (t) => {
  const env = await start(t);
  // `haproxy -c` binds nothing and accepts this config; HAProxy 2.6 would pause its
  // listeners, fail to bind, and refuse connections for ~3 s before resuming (measured).
  const taken = await freePort();
  const squatter = net.createServer();
  await new Promise<void>((r) => squatter.listen(taken, '127.0.0.1', () => r()));
  t.after(() => new Promise<void>((r) => squatter.close(() => r())));
  const before = await readFile(env.cfgPath, 'utf8');
  const reloadsBefore = (await env.master.showProc()).reloads;
  const stop = new AbortController();
  const loading = load(env, stop);
  try {
    await new Promise((r) => setTimeout(r, 300));
    const tcpSvc: TcpService = { kind: 'tcp', name: 'blocked', upstreams: new Map(), ports: [taken], options: DEFAULT_OPTIONS };
    await assert.rejects(env.reloader.reload(env.render(registry([http('web', ['web.test'])], [tcpSvc])), ['service-added:tcp-blocked']), (e: unknown) => {
      assert.ok(e instanceof ConfigInvalidError, String(e));
      assert.match(e.message, new RegExp(`127\\.0\\.0\\.1:${taken}`));
      return true;
    });
    await new Promise((r) => setTimeout(r, 300));
  } finally {
    stop.abort();
  }
  const r = await loading;
  t.diagnostic(`port taken: ${summary(r)}`);
  assert.equal(r.failed, 0, summary(r));
  assert.equal(await readFile(env.cfgPath, 'utf8'), before);
  assert.equal((await env.master.showProc()).reloads, reloadsBefore);
});

test('a reload that fails in HAProxy is rolled back (previous config reloaded); traffic continues', async (t) => {
  const env = await start(t);
  const before = await readFile(env.cfgPath, 'utf8');
  const reloadsBefore = (await env.master.showProc()).reloads;
  // The config is swapped for a broken one between validation and the master reload
  // (what an operator editing the file, or a disk error, would do): HAProxy fails to load it.
  let swapped = 0;
  const sabotaging = {
    reload: async (opts?: { timeoutMs?: number }) => {
      if (swapped++ === 0) await writeFile(env.cfgPath, `${await readFile(env.cfgPath, 'utf8')}\nbackend broken\n    bogus-keyword\n`);
      return env.master.reload(opts);
    },
    showProc: () => env.master.showProc(),
  };
  const reloader = new Reloader({
    haproxyBin: haproxyBin(),
    master: sabotaging,
    runtime: new RuntimeClient({ path: env.adminSocket }),
    guard: new NoGuard(),
    cfgPath: env.cfgPath,
    serverStateFile: env.settings.serverStateFile,
    guardPorts: () => [env.httpPort],
  });
  const stop = new AbortController();
  const loading = load(env, stop);
  let err: unknown;
  try {
    await new Promise((r) => setTimeout(r, 300));
    const next = env.render(registry([http('web', ['web.test']), http('b', ['b.test'])]));
    err = await reloader.reload(next, ['service-added:http-b']).then(
      () => null,
      (e: unknown) => e,
    );
    await new Promise((r) => setTimeout(r, 300));
  } finally {
    stop.abort();
  }
  const r = await loading;
  t.diagnostic(`failed reload + rollback: ${summary(r)}`);
  assert.ok(err instanceof ReloadFailedError, `expected ReloadFailedError, got ${String(err)}`);
  assert.equal(err.context.rolledBack, true);
  assert.equal(r.failed, 0, summary(r));
  assert.equal(await readFile(env.cfgPath, 'utf8'), before);
  assert.equal(await readFile(env.settings.hostsMap, 'utf8'), 'web.test http-web\n');
  const proc = await env.master.showProc();
  assert.equal(proc.failed, 0, 'the rollback reload cleared the failed state');
  assert.equal(proc.reloads, reloadsBefore + 2);
  const after = await runLoad({ url: `http://127.0.0.1:${env.httpPort}/`, host: 'web.test', maxRequests: 20 });
  assert.equal(after.bodies.one, 20, 'slot address survived the failed reload and the rollback');
});
