/**
 * Guardrails (issue 12, items 2 and 3) on real etcd and HAProxy:
 * - a service HAProxy refuses (PCRE2-invalid url_reg, a tcp port taken by another process)
 *   is quarantined and reported while the rest of the same registry change is applied;
 * - a reload that fails at the HAProxy master is retried with exponential backoff, not every
 *   second. The failure is real: HAProxy runs in a network namespace the test creates, where
 *   a listener of the test holds the port a new tcp service asks for; the updater (host
 *   namespace) probes its own namespace, `haproxy -c` binds nothing, so only the master's
 *   reload fails (EADDRINUSE), as in a deployment where HAProxy has its own network namespace.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { readFile, writeFile, mkdir } from 'node:fs/promises';
import { Etcd3 } from 'etcd3';
import {
  startEtcd,
  startBackend,
  runLoad,
  tempDir,
  removeDir,
  waitFor,
  sleep,
  freePort,
  execFileP,
  startUpdater,
  masterView,
  killHaproxy,
  launchHaproxy,
  startProcess,
  stopProcess,
  BIN,
  type EtcdHandle,
  type Backend,
  type UpdaterHandle,
  type Proc,
} from '../../testkit/index.js';
import { renderConfig, defaultSettings } from '../../src/render/index.js';
import { EMPTY_REGISTRY } from '../../src/model.js';
import { unavailableNewPorts } from '../../src/reload/index.js';

const P = '/haproxy-discover';
const ROOT = process.getuid?.() === 0;
let etcd: EtcdHandle;
let client: Etcd3;
let stateDir: string;
let updater: UpdaterHandle;
let web: Backend;

/** Puts all `kv` in one etcd transaction: one revision, one watch event, as a deploy tool would. */
async function putTogether(kv: Record<string, string>): Promise<void> {
  const ops = Object.entries(kv).map(([k, v]) => client.put(k).value(v));
  await client.if(`${P}/__never`, 'Version', '==', 0).then(...ops).commit();
}

async function body(port: number, host: string, urlPath = '/'): Promise<string> {
  const r = await runLoad({ url: `http://127.0.0.1:${port}${urlPath}`, host, maxRequests: 1, concurrency: 1, okStatus: () => true });
  return Object.keys(r.bodies)[0] ?? '';
}

async function metric(u: UpdaterHandle, name: string): Promise<number | null> {
  const text = (await u.get('/metrics')).body;
  const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(text);
  return m ? Number(m[1]) : null;
}

/** The updater's JSON log lines with this `msg`. */
function logLines(u: UpdaterHandle, msg: string): Array<Record<string, unknown>> {
  const out: Array<Record<string, unknown>> = [];
  for (const line of u.proc.output) {
    if (!line.startsWith('{')) continue;
    try {
      const o = JSON.parse(line) as Record<string, unknown>;
      if (o.msg === msg) out.push(o);
    } catch {
      // not a log line
    }
  }
  return out;
}

async function status(dir: string): Promise<string> {
  return (await execFileP(process.execPath, [BIN, 'status', '--etcd', etcd.endpoint, '--state-dir', dir])).stdout;
}

before(async () => {
  etcd = await startEtcd();
  client = new Etcd3({ hosts: etcd.endpoint });
  stateDir = await tempDir('hu-quarantine-');
  web = await startBackend('web-0');
  await etcd.ctl('put', `${P}/http-services/web/domain`, 'web.test');
  await etcd.ctl('put', `${P}/http-services/web/upstreams/w0`, `127.0.0.1:${web.port}`);
  updater = await startUpdater({ etcdEndpoint: etcd.endpoint, stateDir });
  await waitFor(async () => (await body(updater.httpPort, 'web.test')) === 'web-0', { what: 'web routed', timeoutMs: 15_000 });
});

after(async () => {
  await updater?.stop();
  await killHaproxy(path.join(stateDir, 'master.sock'));
  await web?.close();
  client?.close();
  await etcd?.destroy();
  await removeDir(stateDir);
});

test('a PCRE2-invalid url_reg is quarantined and reported; the valid service put with it is routed after one reload; fixing it brings it in', async (t) => {
  const good = await startBackend('good-0');
  const bad = await startBackend('bad-0');
  t.after(() => Promise.all([good.close(), bad.close()]));
  const before = await masterView(updater.masterSocket);
  // `\u0041` is a valid JavaScript escape and no PCRE2 one: the watcher accepts it, HAProxy refuses it.
  await putTogether({
    [`${P}/http-services/bad/domain`]: 'bad.test',
    [`${P}/http-services/bad/url_reg`]: '^/x\\u0041',
    [`${P}/http-services/bad/upstreams/b0`]: `127.0.0.1:${bad.port}`,
    [`${P}/http-services/good/domain`]: 'good.test',
    [`${P}/http-services/good/url_reg`]: '^/good/',
    [`${P}/http-services/good/upstreams/g0`]: `127.0.0.1:${good.port}`,
  });
  await waitFor(async () => (await body(updater.httpPort, 'good.test', '/good/1')) === 'good-0', { what: 'good routed', timeoutMs: 20_000 });
  const afterGood = await masterView(updater.masterSocket);
  assert.equal(afterGood.reloads - before.reloads, 1, 'exactly one reload, without the refused service');
  assert.equal(afterGood.failed, 0);

  const cfg = await readFile(path.join(stateDir, 'haproxy.cfg'), 'utf8');
  assert.ok(!cfg.includes('http-bad'), 'the refused service is not in haproxy.cfg');
  assert.match(cfg, /^backend http-good$/m);
  const key = `${P}/http-services/bad`;
  const lines = logLines(updater, 'service quarantined: left out of haproxy.cfg until its keys change; the rest is applied');
  assert.equal(lines.length, 1, 'one error line');
  assert.equal(lines[0]!.key, key);
  assert.match(String(lines[0]!.haproxy), /url_reg|regex|\\u0041/i, "HAProxy's message is reported");
  assert.equal(await metric(updater, 'haproxy_updater_quarantined_services'), 1);
  // Ready (once good's server is UP): one bad entry must not take the load balancer out of rotation; the body names it.
  const ready = await waitFor(async () => { const r = await updater.get('/readyz'); return r.status === 200 ? r : null; }, { what: '/readyz 200 with a quarantined service', timeoutMs: 5000 });
  assert.ok(ready);
  assert.equal(ready.status, 200, ready.body);
  assert.ok(ready.body.includes(key), ready.body);
  const st = await waitFor(async () => ((await status(stateDir)).includes(`quarantined  ${key}:`) ? status(stateDir) : ''), { what: 'status lists it', timeoutMs: 5000 });
  assert.match(st, /quarantined {2}\/haproxy-discover\/http-services\/bad: /);
  assert.equal(await body(updater.httpPort, 'bad.test', '/xA'), 'no route', 'the refused service is not routed');

  // Its keys change: tried again, now accepted.
  await etcd.ctl('put', `${P}/http-services/bad/url_reg`, '^/xA');
  await waitFor(async () => (await body(updater.httpPort, 'bad.test', '/xA')) === 'bad-0', { what: 'fixed service routed', timeoutMs: 20_000 });
  assert.equal(await metric(updater, 'haproxy_updater_quarantined_services'), 0);
  assert.ok(!(await updater.get('/readyz')).body.includes(key));
  assert.equal(await body(updater.httpPort, 'good.test', '/good/1'), 'good-0');
  for (const s of ['bad', 'good']) await etcd.ctl('del', '--prefix', `${P}/http-services/${s}/`);
});

test('a tcp service on a port another process holds is quarantined (EADDRINUSE); the service put with it is applied', async (t) => {
  const holder = net.createServer();
  await new Promise<void>((r) => holder.listen(0, '127.0.0.1', () => r()));
  const held = (holder.address() as net.AddressInfo).port;
  const echo = net.createServer((s) => s.pipe(s));
  await new Promise<void>((r) => echo.listen(0, '127.0.0.1', () => r()));
  t.after(() => Promise.all([holder, echo].map((s) => new Promise<void>((r) => s.close(() => r())))));
  const echoPort = (echo.address() as net.AddressInfo).port;
  const freeTcp = await freePort();
  const before = await masterView(updater.masterSocket);

  await putTogether({
    [`${P}/tcp-services/blocked/ports`]: String(held),
    [`${P}/tcp-services/blocked/upstreams/e0`]: `127.0.0.1:${echoPort}`,
    [`${P}/tcp-services/echo/ports`]: String(freeTcp),
    [`${P}/tcp-services/echo/upstreams/e0`]: `127.0.0.1:${echoPort}`,
  });
  const echoed = await waitFor(async () => {
    const got = await new Promise<string>((resolve) => {
      const s = net.connect(freeTcp, '127.0.0.1', () => s.end('ping'));
      let data = '';
      s.on('data', (c) => (data += c));
      s.on('close', () => resolve(data));
      s.on('error', () => resolve(''));
      s.setTimeout(2000, () => s.destroy());
    });
    return got === 'ping' ? got : '';
  }, { what: 'echo service routed', timeoutMs: 20_000 });
  assert.equal(echoed, 'ping');
  const after = await masterView(updater.masterSocket);
  assert.equal(after.reloads - before.reloads, 1, 'one reload, without the blocked service');
  assert.equal(after.failed, 0, 'HAProxy never tried to bind the taken port');
  const cfg = await readFile(path.join(stateDir, 'haproxy.cfg'), 'utf8');
  assert.ok(!cfg.includes('tcp-blocked'), 'blocked service left out');
  const line = logLines(updater, 'service quarantined: left out of haproxy.cfg until its keys change; the rest is applied').find((l) => l.backend === 'tcp-blocked');
  assert.ok(line, 'logged');
  assert.equal(line.key, `${P}/tcp-services/blocked`);
  assert.match(String(line.haproxy), new RegExp(`:${held}: EADDRINUSE`));
  const ready = await waitFor(async () => { const r = await updater.get('/readyz'); return r.status === 200 ? r : null; }, { what: '/readyz 200 with a quarantined service', timeoutMs: 5000 });
  assert.ok(ready);
  assert.equal(ready.status, 200);
  assert.match(ready.body, /tcp-services\/blocked: cannot bind .*EADDRINUSE/);
  for (const s of ['blocked', 'echo']) await etcd.ctl('del', '--prefix', `${P}/tcp-services/${s}/`);
  await waitFor(async () => (await metric(updater, 'haproxy_updater_quarantined_services')) === 0, { what: 'released once removed', timeoutMs: 10_000 });
});

test('the port probe names EADDRNOTAVAIL and EADDRINUSE for a listener the new config adds', async () => {
  const holder = net.createServer();
  await new Promise<void>((r) => holder.listen(0, '127.0.0.1', () => r()));
  const held = (holder.address() as net.AddressInfo).port;
  try {
    const current = 'frontend a\n    bind 127.0.0.1:1\n';
    // 192.0.2.0/24 is TEST-NET-1: assigned to no interface here.
    const next = `${current}frontend b\n    bind 192.0.2.1:8080\nfrontend c\n    bind 127.0.0.1:${held}\n`;
    const u = await unavailableNewPorts(current, next);
    assert.deepEqual(u.map((x) => [x.host, x.port, x.code]), [['192.0.2.1', 8080, 'EADDRNOTAVAIL'], ['127.0.0.1', held, 'EADDRINUSE']]);
  } finally {
    await new Promise<void>((r) => holder.close(() => r()));
  }
});

test('a reload that fails at the master is retried with exponential backoff; old workers stay bounded', { skip: ROOT ? false : 'needs root (ip netns)' }, async (t) => {
  const ns = `hu-q-${process.pid}-${randomBytes(3).toString('hex')}`;
  const dir = await tempDir('hu-quarantine-ext-');
  const procs: Proc[] = [];
  let u: UpdaterHandle | null = null;
  await execFileP('ip', ['netns', 'add', ns]);
  t.after(async () => {
    await u?.stop();
    await killHaproxy(path.join(dir, 'master.sock'));
    for (const p of procs) await stopProcess(p, 1000);
    await execFileP('ip', ['netns', 'del', ns]).catch(() => undefined);
    await removeDir(dir);
  });
  await execFileP('ip', ['netns', 'exec', ns, 'ip', 'link', 'set', 'lo', 'up']);

  // HAProxy in the namespace, on a config the updater then takes over (external mode).
  const httpPort = await freePort();
  const settings = { ...defaultSettings(dir), bindAddress: '127.0.0.1', httpPort, httpsPort: null };
  const first = renderConfig({ registry: EMPTY_REGISTRY, capacity: new Map(), settings });
  for (const [file, content] of first.files) {
    await mkdir(path.dirname(file), { recursive: true });
    await writeFile(file, content);
  }
  const cfgPath = path.join(dir, 'haproxy.cfg');
  await writeFile(cfgPath, first.config);
  const masterSocket = path.join(dir, 'master.sock');
  procs.push(await launchHaproxy({ cfgPath, masterSocket, adminSocket: settings.adminSocket, cwd: dir, netns: ns }));

  // The port the new tcp service asks for is taken inside HAProxy's namespace only.
  const taken = await freePort();
  procs.push(startProcess('ip', ['netns', 'exec', ns, 'socat', `TCP-LISTEN:${taken},bind=127.0.0.1,reuseaddr,fork`, 'EXEC:/bin/cat']));
  await waitFor(async () => (await execFileP('ip', ['netns', 'exec', ns, 'ss', '-ltnH', `sport = :${taken}`])).stdout.includes(String(taken)), { what: 'port held in the namespace' });

  u = await startUpdater({
    etcdEndpoint: etcd.endpoint,
    stateDir: dir,
    httpPort,
    env: { HAPROXY_UPDATER_PREFIX: '/hu-master-fail' },
    extraArgs: ['--haproxy', 'external', '--master-socket', masterSocket, '--runtime-socket', settings.adminSocket, '--https-port', '0', '--reload-min-interval', '200ms', '--drain-timeout', '1s', '--hard-stop-after', '30s', '--mworker-max-reloads', '5'],
  });
  const failures = () => logLines(u!, 'reload failed; rolling back to the previous config');
  const start = Date.now();
  await client.put(`/hu-master-fail/tcp-services/held/ports`).value(String(taken));
  await client.put(`/hu-master-fail/tcp-services/held/upstreams/h0`).value('127.0.0.1:9');

  // Watch for a fixed window; sample the master's workers meanwhile.
  const windowMs = 30_000;
  let maxOld = 0;
  let sawBackoffReason = false;
  while (Date.now() - start < windowMs) {
    const v = await masterView(masterSocket).catch(() => null);
    if (v) maxOld = Math.max(maxOld, v.oldWorkers.length);
    const r = await u.get('/readyz');
    if (r.status === 503 && r.body.includes('reload failed at the HAProxy master')) sawBackoffReason = true;
    await sleep(250);
  }
  const times = failures().map((l) => Date.parse(String(l.time)));
  const gaps = times.slice(1).map((x, i) => x - times[i]!);
  // Each attempt costs the failed reload plus its rollback; a fixed 1 s retry would start one
  // every (attempt + 1 s). The first gap is one attempt plus the first backoff (2 s).
  t.diagnostic(`attempts ${times.length} in ${windowMs} ms, gaps ${gaps.join('/')} ms, max old workers ${maxOld}`);
  assert.ok(times.length >= 3, `the failing reload was retried: ${times.length}`);
  // The backoff doubles (2 s, 4 s, 8 s ...): each gap is longer than the one before by at least 2 s.
  for (let i = 1; i < gaps.length; i++) assert.ok(gaps[i]! - gaps[i - 1]! > 1500, `gaps grow: ${gaps.join('/')}`);
  const attemptMs = Math.max(0, gaps[0]! - 2000);
  const fixedInterval = Math.floor(windowMs / (attemptMs + 1000));
  assert.ok(times.length < fixedInterval, `${times.length} attempts < ${fixedInterval} at a fixed 1 s interval`);
  assert.ok(sawBackoffReason, '/readyz named the failed reload');
  assert.ok((await metric(u, 'haproxy_updater_reload_consecutive_failures'))! >= 3);
  assert.ok((await metric(u, 'haproxy_updater_reload_backoff_seconds'))! > 0);
  assert.ok(maxOld <= 1, `old workers bounded: ${maxOld}`);
  const old = await metric(u, 'haproxy_updater_haproxy_old_workers');
  assert.ok(old !== null && old <= 1, `old workers exported: ${old}`);
  const cfg = await readFile(cfgPath, 'utf8');
  assert.match(cfg, /^\s+hard-stop-after 30000ms$/m);
  assert.match(cfg, /^\s+mworker-max-reloads 5$/m);
  assert.ok(!cfg.includes('tcp-held'), 'rolled back: the running config is the previous one');

  // The service goes away: nothing asks for the reload any more; ready again.
  await client.delete().prefix('/hu-master-fail/');
  await waitFor(async () => (await u!.get('/readyz')).status === 200, { what: 'ready again', timeoutMs: 15_000 });
  assert.equal(await metric(u, 'haproxy_updater_reload_consecutive_failures'), 0);
});
