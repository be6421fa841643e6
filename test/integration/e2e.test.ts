/**
 * End to end: real etcd + the real `haproxy-updater run` (managed HAProxy) + small HTTP
 * backends, under a bounded request load. Reload counts are read from HAProxy's master
 * CLI, never from the updater's own counters.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import tls from 'node:tls';
import net from 'node:net';
import https from 'node:https';
import path from 'node:path';
import { readFile, writeFile } from 'node:fs/promises';
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
  percentile,
  type EtcdHandle,
  type Backend,
  type LoadResult,
  startUpdater,
  masterView,
  killHaproxy,
  type UpdaterHandle,
  socketCommand,
} from '../../testkit/index.js';
import { capabilitiesFor, isMaint, parseInfo, parseServersState } from '../../src/runtime/index.js';
import { readAppliedStructure } from '../../src/render/index.js';

const P = '/haproxy-discover';
let etcd: EtcdHandle;
let stateDir: string;
let updater: UpdaterHandle;
const backends: Backend[] = [];
/** The leg's HAProxy adds and deletes backends at runtime (3.4+): a new service costs no reload. */
let dynamic = false;

async function get(host: string, port: number): Promise<{ status: number; body: string }> {
  const r = await runLoad({ url: `http://127.0.0.1:${port}/`, host, maxRequests: 1, concurrency: 1, okStatus: () => true });
  const body = Object.keys(r.bodies)[0] ?? '';
  return { status: r.failed ? 0 : 200, body };
}

function summarize(name: string, r: LoadResult): string {
  return `${name}: ok=${r.ok} failed=${r.failed} ${JSON.stringify(r.failures)} p99=${percentile(r.latencies, 99).toFixed(1)}ms max=${Math.max(0, ...r.latencies).toFixed(1)}ms`;
}

/** Waits (no fixed sleep) until the stable web upstreams have answered `n` more requests: load is flowing now. */
async function servedMore(n: number, what: string): Promise<void> {
  const total = () => backends.reduce((sum, b) => sum + b.hits, 0);
  const start = total();
  await waitFor(() => total() >= start + n, { what: `${what} (${n} more requests served)`, timeoutMs: 15_000 });
}

/** The web servers in service (not maint) as HAProxy reports them. */
async function webServing(): Promise<Array<{ addr: string; port: number }>> {
  const rows = parseServersState(await socketCommand(updater.adminSocket, 'show servers state http-web'));
  return rows.filter((r) => !isMaint(r)).map((r) => ({ addr: r.srvAddr, port: r.srvPort }));
}

/** Waits until no web server in service has `port` (its removal went through drain and maint). */
async function removedFromWeb(port: number, what: string): Promise<void> {
  await waitFor(async () => !(await webServing()).some((s) => s.port === port), { what, timeoutMs: 15_000 });
}

before(async () => {
  etcd = await startEtcd();
  stateDir = await tempDir('hu-e2e-');
  for (let i = 0; i < 3; i++) backends.push(await startBackend(`web-${i}`));
  await etcd.ctl('put', `${P}/http-services/web/domain`, 'web.test');
  for (const b of backends) await etcd.ctl('put', `${P}/http-services/web/upstreams/${b.id}`, `127.0.0.1:${b.port}`);
  updater = await startUpdater({ etcdEndpoint: etcd.endpoint, stateDir });
  await waitFor(async () => (await get('web.test', updater.httpPort)).body.startsWith('web-'), { what: 'web routed', timeoutMs: 15_000 });
  dynamic = capabilitiesFor(parseInfo(await socketCommand(updater.adminSocket, 'show info')).Version).capabilities.dynamicBackends;
});

after(async () => {
  await updater?.stop();
  await killHaproxy(path.join(stateDir, 'master.sock'));
  await Promise.all(backends.map((b) => b.close()));
  await etcd?.destroy();
  await removeDir(stateDir);
});

test('200 upstream adds/removes under load: zero failed requests, zero reloads', async (t) => {
  const pool: Backend[] = [];
  for (let i = 0; i < 6; i++) pool.push(await startBackend(`pool-${i}`));
  t.after(() => Promise.all(pool.map((b) => b.close())));
  const before = await masterView(updater.masterSocket);
  const abort = new AbortController();
  // Bounded, but never the thing that ends it: on an idle machine 4 connections do 2,000+
  // requests/s, and a 50,000 cap ran out before the churn settled (the load then stopped and
  // `servedMore` timed out on the 3.x legs of CI).
  const load = runLoad({ url: `http://127.0.0.1:${updater.httpPort}/`, host: 'web.test', concurrency: 4, durationMs: 90_000, maxRequests: 400_000, signal: abort.signal });
  // 100 adds + 100 removes. Each temporary upstream lives for three rounds (long enough to
  // pass its health checks and take traffic), so up to 6 extras sit beside the 3 stable
  // ones: more than the 4 slots, so overflow servers are exercised too.
  let changes = 0;
  const started = Date.now();
  const key = (i: number, s: string) => `${P}/http-services/web/upstreams/tmp-${i}-${s}`;
  for (let i = 0; i < 53; i++) {
    if (i >= 3) {
      await etcd.ctl('del', key(i - 3, 'a'));
      await etcd.ctl('del', key(i - 3, 'b'));
      changes += 2;
    }
    if (i < 50) {
      const a = pool[(2 * i) % pool.length]!;
      const b = pool[(2 * i + 1) % pool.length]!;
      await etcd.ctl('put', key(i, 'a'), `127.0.0.1:${a.port}`);
      await etcd.ctl('put', key(i, 'b'), JSON.stringify({ addr: `127.0.0.1:${b.port}`, weight: 5 }));
      changes += 2;
    }
    // The churn's pace (the workload), not a wait for a state.
    await sleep(250);
  }
  const churnMs = Date.now() - started;
  // Load runs until every removal has gone through drain and maint: only the 3 stable upstreams serve.
  const stable = new Set(backends.map((b) => b.port));
  await waitFor(async () => {
    const serving = await webServing();
    return serving.length === 3 && serving.every((s) => stable.has(s.port));
  }, { what: 'only the 3 stable upstreams in service after the churn', timeoutMs: 20_000 });
  await servedMore(20, 'load after the churn settled');
  abort.abort();
  const r = await load;
  const after = await masterView(updater.masterSocket);
  t.diagnostic(`${changes} changes in ${churnMs} ms; ${summarize('load', r)}; reloads ${before.reloads}→${after.reloads}`);
  assert.equal(changes, 200);
  assert.equal(r.failed, 0, summarize('load', r));
  assert.ok(r.ok > 500, `enough traffic flowed: ${r.ok}`);
  assert.equal(after.reloads, before.reloads, 'no reload for membership changes');
  assert.equal(after.masterPid, before.masterPid);
  const poolHits = pool.reduce((n, b) => n + b.hits, 0);
  assert.ok(poolHits > 0, 'temporary upstreams received traffic');
  // Everything removed is gone from HAProxy: only the 3 stable upstreams serve.
  const status = await execFileP(process.execPath, [path.join(process.cwd(), 'bin/haproxy-updater.js'), 'status', '--etcd', etcd.endpoint, '--state-dir', stateDir]);
  const active = status.stdout.split('\n').filter((l) => l.startsWith('http-web ') && /\bready\b/.test(l) && !l.includes('(free)'));
  assert.equal(active.length, 3, status.stdout);
});

test('a new domain for an existing service is routed with zero reloads', async () => {
  const before = await masterView(updater.masterSocket);
  await etcd.ctl('put', `${P}/http-services/web/domain`, 'web.test, www.web.test');
  await waitFor(async () => (await get('www.web.test', updater.httpPort)).body.startsWith('web-'), { what: 'new domain routed' });
  const after = await masterView(updater.masterSocket);
  assert.equal(after.reloads, before.reloads);
  // The file is written after the runtime `add map` of the same pass, so a request can be routed before it lands.
  const map = await waitFor(async () => {
    const text = await readFile(path.join(stateDir, 'hosts.map'), 'utf8');
    return /^www\.web\.test http-web$/m.test(text) ? text : '';
  }, { what: 'hosts.map rewritten', timeoutMs: 3000 }).catch(() => readFile(path.join(stateDir, 'hosts.map'), 'utf8'));
  assert.match(map, /^www\.web\.test http-web$/m, 'map file rewritten so a reload keeps the domain');
});

test('a new service costs exactly one reload (none on 3.4+), is routed, and no request fails meanwhile', async (t) => {
  const api = await startBackend('api-0');
  t.after(() => api.close());
  const before = await masterView(updater.masterSocket);
  const abort = new AbortController();
  const load = runLoad({ url: `http://127.0.0.1:${updater.httpPort}/`, host: 'web.test', concurrency: 4, durationMs: 30_000, signal: abort.signal });
  await etcd.ctl('put', `${P}/http-services/api/domain`, 'api.test');
  await etcd.ctl('put', `${P}/http-services/api/upstreams/a0`, `127.0.0.1:${api.port}`);
  await waitFor(async () => (await get('api.test', updater.httpPort)).body === 'api-0', { what: 'api routed', timeoutMs: 15_000 });
  await servedMore(50, 'load after api routed');
  abort.abort();
  const r = await load;
  const after = await masterView(updater.masterSocket);
  t.diagnostic(summarize('load during new service', r));
  assert.equal(after.reloads - before.reloads, dynamic ? 0 : 1, dynamic ? 'added at runtime: no reload' : 'exactly one reload');
  assert.equal(after.failed, 0);
  assert.equal(r.failed, 0, summarize('load', r));
});

test('url_reg routes matching URLs to their service before the Host map (one reload)', async (t) => {
  const special = await startBackend('special-0');
  t.after(() => special.close());
  const before = await masterView(updater.masterSocket);
  // Backslash, brackets and a quantifier: regex text that must reach HAProxy intact.
  await etcd.ctl('put', `${P}/http-services/special/url_reg`, '^/special/[0-9]+\\.json$');
  await etcd.ctl('put', `${P}/http-services/special/upstreams/sp0`, `127.0.0.1:${special.port}`);
  const url = (p: string) => `http://127.0.0.1:${updater.httpPort}${p}`;
  const body = async (p: string) => Object.keys((await runLoad({ url: url(p), host: 'web.test', maxRequests: 1, concurrency: 1 })).bodies)[0] ?? '';
  await waitFor(async () => (await body('/special/42.json')) === 'special-0', { what: 'url_reg routed', timeoutMs: 15_000 });
  assert.match(await body('/special/42xjson'), /^web-/, 'the dot is a literal dot: the backslash survived');
  assert.match(await body('/special/abc.json'), /^web-/, 'non-matching URLs keep the Host route');
  const after = await masterView(updater.masterSocket);
  assert.equal(after.reloads - before.reloads, 1, 'a new service with url_reg: one reload');
});

test('sslpass service routed by SNI to a TLS upstream, and a tcp service routed', async (t) => {
  const dbg = (m: string) => process.env.E2E_DEBUG && console.error('[e2e]', m);
  const dir = await tempDir('hu-tls-');
  t.after(() => removeDir(dir));
  await execFileP('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', path.join(dir, 'k.pem'), '-out', path.join(dir, 'c.pem'), '-days', '2', '-subj', '/CN=secure.test']);
  const tlsServer = https.createServer({ key: await readFile(path.join(dir, 'k.pem')), cert: await readFile(path.join(dir, 'c.pem')) }, (_req, res) => res.end('secure-upstream\n'));
  await new Promise<void>((r) => tlsServer.listen(0, '127.0.0.1', () => r()));
  t.after(() => new Promise<void>((r) => tlsServer.close(() => r())));
  const tlsPort = (tlsServer.address() as net.AddressInfo).port;
  const echo = net.createServer((s) => s.pipe(s));
  await new Promise<void>((r) => echo.listen(0, '127.0.0.1', () => r()));
  t.after(() => new Promise<void>((r) => echo.close(() => r())));
  const echoPort = (echo.address() as net.AddressInfo).port;
  const tcpPort = await freePort();
  dbg('servers up');

  await etcd.ctl('put', `${P}/http-services/secure/domain`, 'secure.test');
  await etcd.ctl('put', `${P}/http-services/secure/sslpass`, '1');
  await etcd.ctl('put', `${P}/http-services/secure/upstreams/s0`, `127.0.0.1:${tlsPort}`);
  await etcd.ctl('put', `${P}/tcp-services/echo/ports`, String(tcpPort));
  await etcd.ctl('put', `${P}/tcp-services/echo/upstreams/e0`, `127.0.0.1:${echoPort}`);
  dbg('registered');

  const body = await waitFor(
    () =>
      new Promise<string>((resolve, reject) => {
        const req = https.get(
          { host: '127.0.0.1', port: updater.httpsPort, servername: 'secure.test', headers: { host: 'secure.test' }, rejectUnauthorized: false, agent: false, timeout: 2000 },
          (res) => {
            let b = '';
            res.on('data', (c: Buffer) => (b += c.toString()));
            res.on('end', () => resolve(b.trim()));
          },
        );
        req.on('error', reject);
        req.on('timeout', () => req.destroy(new Error('timeout')));
      }),
    { what: 'sslpass routed', timeoutMs: 15_000 },
  );
  dbg('body ' + body);
  assert.equal(body, 'secure-upstream', 'TLS terminated by the upstream itself');
  const peer = await new Promise<string>((resolve, reject) => {
    const s = tls.connect({ host: '127.0.0.1', port: updater.httpsPort, servername: 'secure.test', rejectUnauthorized: false }, () => {
      resolve(String(s.getPeerCertificate().subject?.CN ?? ''));
      s.end();
    });
    s.setTimeout(2000, () => s.destroy(new Error('timeout')));
    s.on('error', reject);
  });
  dbg('peer ' + peer);
  assert.equal(peer, 'secure.test', "the upstream's certificate is served (passthrough, not termination)");
  const echoed = await waitFor(
    () =>
      new Promise<string>((resolve, reject) => {
        const s = net.connect(tcpPort, '127.0.0.1', () => s.write('ping\n'));
        s.setTimeout(2000, () => s.destroy(new Error('timeout')));
        s.on('data', (d) => {
          resolve(d.toString());
          s.end();
        });
        s.on('error', reject);
        // HAProxy closes without data while the backend has no server yet.
        s.on('close', () => reject(new Error('closed without data')));
      }),
    { what: 'tcp routed', timeoutMs: 15_000 },
  );
  dbg('echoed');
  assert.equal(echoed, 'ping\n');
});

test('hostile registry values are rejected while the rest applies', async () => {
  await etcd.ctl('put', `${P}/http-services/web/upstreams/evil1`, '127.0.0.1:8080 # check disabled');
  await etcd.ctl('put', `${P}/http-services/evil;x/domain`, 'evil.test');
  await etcd.ctl('put', `${P}/http-services/shop/domain`, 'shop.test;set server http-web/s1 state maint');
  await etcd.ctl('put', `${P}/http-services/shop2/domain`, 'shop2.test');
  await etcd.ctl('put', `${P}/http-services/shop2/upstreams/ok`, `127.0.0.1:${backends[0]!.port}`);
  await waitFor(async () => (await get('shop2.test', updater.httpPort)).body === 'web-0', { what: 'sibling applied', timeoutMs: 15_000 });
  const metrics = (await updater.get('/metrics')).body;
  const rejected = Number(/^haproxy_updater_registry_rejected_entries (\d+)/m.exec(metrics)?.[1] ?? 0);
  assert.ok(rejected >= 3, `rejected entries reported: ${rejected}`);
  const cfg = await readFile(path.join(stateDir, 'haproxy.cfg'), 'utf8');
  const maps = await readFile(path.join(stateDir, 'hosts.map'), 'utf8');
  for (const bad of ['# check disabled', 'evil;x', 'set server']) {
    assert.ok(!cfg.includes(bad) && !maps.includes(bad), `${bad} never reaches the config or maps`);
  }
  // The injected `set server ... maint` did not run: web still has all its upstreams ready.
  const r = await runLoad({ url: `http://127.0.0.1:${updater.httpPort}/`, host: 'web.test', maxRequests: 30 });
  assert.equal(r.failed, 0);
  assert.equal(Object.keys(r.bodies).length, 3);
  for (const k of ['web/upstreams/evil1', 'evil;x/domain', 'shop/domain']) await etcd.ctl('del', `${P}/http-services/${k}`);
});

test('a change HAProxy refuses is quarantined: the service keeps its running version, membership changes still apply; fixed, it recovers', async (t) => {
  const extra = await startBackend('web-refused');
  t.after(() => extra.close());
  const before = await masterView(updater.masterSocket);
  // 3.4+: the service removed by the test before leaves at runtime and rewrites the file; let it finish.
  if (dynamic) await waitFor(async () => !(await readFile(path.join(stateDir, 'haproxy.cfg'), 'utf8')).includes('backend http-shop\n'), { what: 'http-shop removed at runtime' });
  const cfgBefore = await readFile(path.join(stateDir, 'haproxy.cfg'), 'utf8');
  // Valid for JavaScript (so the watcher accepts it), refused by PCRE2: variable-length lookbehind.
  await etcd.ctl('put', `${P}/http-services/web/url_reg`, '(?<=a+)b');
  await waitFor(async () => /^haproxy_updater_quarantined_services 1$/m.test((await updater.get('/metrics')).body), { what: 'refused change quarantined', timeoutMs: 10_000 });
  await etcd.ctl('put', `${P}/http-services/web/upstreams/refused`, `127.0.0.1:${extra.port}`);
  await waitFor(
    async () => {
      await runLoad({ url: `http://127.0.0.1:${updater.httpPort}/`, host: 'web.test', maxRequests: 8, concurrency: 1 });
      return extra.hits > 0;
    },
    { what: 'membership change applied despite the refused change', timeoutMs: 10_000, intervalMs: 200 },
  );
  // The service keeps its running version (a removal still pending from an earlier test may ride along on a reload).
  const cfgNow = await readFile(path.join(stateDir, 'haproxy.cfg'), 'utf8');
  assert.equal(readAppliedStructure(cfgNow).get('http-web'), readAppliedStructure(cfgBefore).get('http-web'), 'http-web keeps its running structure');
  assert.ok(!cfgNow.includes('url_reg/web.pat'), 'the refused url_reg is not in the config');
  const ready = await updater.get('/readyz');
  assert.equal(ready.status, 200, 'a quarantined service is reported, not a reason to leave rotation');
  assert.match(ready.body, /quarantined.*http-services\/web: /);
  await etcd.ctl('del', `${P}/http-services/web/url_reg`);
  await etcd.ctl('del', `${P}/http-services/web/upstreams/refused`);
  await waitFor(async () => /^haproxy_updater_quarantined_services 0$/m.test((await updater.get('/metrics')).body), { what: 'released once changed', timeoutMs: 10_000 });
  const after = await masterView(updater.masterSocket);
  assert.ok(after.reloads - before.reloads <= 1, `at most the one reload of the rest of the change: ${after.reloads - before.reloads}`);
  assert.equal(after.failed, 0);
});

test('drift made behind our back is repaired, and `plan` then has nothing to do', async () => {
  const { socketCommand } = await import('../../testkit/index.js');
  const state = await socketCommand(updater.adminSocket, 'show servers state http-web');
  const slot = /^\d+ http-web \d+ (s\d+) 127\.0\.0\.1 /m.exec(state)?.[1];
  assert.ok(slot, state);
  await socketCommand(updater.adminSocket, `set server http-web/${slot} state maint`);
  await waitFor(async () => !/MAINT/.test((await socketCommand(updater.adminSocket, 'show stat http-web 4 -1')).split('\n').find((l) => l.startsWith(`http-web,${slot},`)) ?? 'MAINT'), {
    what: 'slot taken out behind our back is back in service',
    timeoutMs: 10_000,
  });
  await waitFor(
    async () => {
      const plan = await execFileP(process.execPath, [path.join(process.cwd(), 'bin/haproxy-updater.js'), 'plan', '--etcd', etcd.endpoint, '--state-dir', stateDir, '--http-port', String(updater.httpPort), '--https-port', String(updater.httpsPort), '--bind-address', '127.0.0.1']);
      return /runtime: nothing to do/.test(plan.stdout) && /reload: not needed|reload: with the next one/.test(plan.stdout);
    },
    { what: 'plan of a converged state is empty', timeoutMs: 10_000 },
  );
});

test('etcd outage: HAProxy keeps serving the last good state; changes made meanwhile apply after', async (t) => {
  const late = await startBackend('web-late');
  t.after(() => late.close());
  const abort = new AbortController();
  const load = runLoad({ url: `http://127.0.0.1:${updater.httpPort}/`, host: 'web.test', concurrency: 2, durationMs: 30_000, signal: abort.signal });
  await etcd.kill();
  await waitFor(async () => /^haproxy_updater_registry_stale 1$/m.test((await updater.get('/metrics')).body), { what: 'stale reported', timeoutMs: 15_000 });
  await servedMore(50, 'load served while etcd is down');
  await etcd.start();
  await etcd.ctl('put', `${P}/http-services/web/upstreams/late`, `127.0.0.1:${late.port}`);
  await waitFor(() => late.hits > 0, { what: 'change after the outage applied', timeoutMs: 20_000 });
  await etcd.ctl('del', `${P}/http-services/web/upstreams/late`);
  await removedFromWeb(late.port, 'late upstream out of service');
  await servedMore(20, 'load after the late upstream left');
  abort.abort();
  const r = await load;
  t.diagnostic(summarize('load across etcd outage', r));
  assert.equal(r.failed, 0, summarize('load', r));
  assert.match((await updater.get('/metrics')).body, /^haproxy_updater_registry_stale 0$/m);
});

test('updater killed with SIGKILL and restarted: zero reloads, zero failed requests', async (t) => {
  const before = await masterView(updater.masterSocket);
  const abort = new AbortController();
  const load = runLoad({ url: `http://127.0.0.1:${updater.httpPort}/`, host: 'web.test', concurrency: 4, durationMs: 30_000, signal: abort.signal });
  await servedMore(20, 'load before the kill');
  await updater.kill();
  await servedMore(50, 'load served while the updater is down');
  updater = await startUpdater({ etcdEndpoint: etcd.endpoint, stateDir, httpPort: updater.httpPort, httpsPort: updater.httpsPort, listenPort: updater.listenPort });
  // A change after the restart is still applied (the restarted updater adopted HAProxy).
  const extra = await startBackend('web-extra');
  t.after(() => extra.close());
  await etcd.ctl('put', `${P}/http-services/web/upstreams/extra`, `127.0.0.1:${extra.port}`);
  await waitFor(() => extra.hits > 0, { what: 'upstream added after restart gets traffic', timeoutMs: 10_000 });
  await etcd.ctl('del', `${P}/http-services/web/upstreams/extra`);
  await removedFromWeb(extra.port, 'extra upstream out of service');
  abort.abort();
  const r = await load;
  const after = await masterView(updater.masterSocket);
  t.diagnostic(summarize('load across updater SIGKILL', r));
  assert.equal(after.masterPid, before.masterPid, 'same HAProxy adopted');
  assert.equal(after.reloads, before.reloads, 'no reload on restart');
  assert.equal(r.failed, 0, summarize('load', r));
});

test("HAProxy's worker killed: the updater restores the state", async () => {
  const before = await masterView(updater.masterSocket);
  for (const pid of before.workers) process.kill(pid, 'SIGKILL');
  await waitFor(
    async () => {
      const r = await runLoad({ url: `http://127.0.0.1:${updater.httpPort}/`, host: 'web.test', maxRequests: 12, concurrency: 1 });
      return r.failed === 0 && Object.keys(r.bodies).length === 3;
    },
    { what: 'web served by all 3 upstreams again', timeoutMs: 30_000, intervalMs: 250 },
  );
  // Upstreams are held until their first health checks pass, so each service comes back
  // on its own schedule: wait for each.
  await waitFor(async () => (await get('www.web.test', updater.httpPort)).body.startsWith('web-'), { what: 'runtime-added domain restored' });
  await waitFor(async () => (await get('shop2.test', updater.httpPort)).body === 'web-0', { what: 'shop2 (a service added at runtime) restored' });
  const after = await masterView(updater.masterSocket);
  assert.notEqual(after.masterPid, before.masterPid, 'a new HAProxy was started by the updater');
});

test('SIGTERM stops the updater and its managed HAProxy', async () => {
  const view = await masterView(updater.masterSocket);
  await updater.stop();
  assert.equal(updater.proc.child.exitCode, 0);
  await waitFor(
    () => {
      try {
        process.kill(view.masterPid, 0);
        return false;
      } catch {
        return true;
      }
    },
    { what: 'haproxy master gone', timeoutMs: 10_000 },
  );
  await writeFile(path.join(stateDir, 'stopped'), 'ok');
});
