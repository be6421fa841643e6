/**
 * The admission probe (`--admission probe`) against real upstreams, real etcd and the real
 * `haproxy-updater run` with its managed HAProxy. Upstreams count what reaches them by kind:
 * the updater's probe (its User-Agent), HAProxy's checks (other GETs of the health path) and
 * client requests (every other path), so "no request" means no client request, and "let in
 * by the probe" means a client request arrived before HAProxy's check could have passed
 * `rise` (2) times.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import path from 'node:path';
import { readFile } from 'node:fs/promises';
import {
  startEtcd,
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
  readServers,
  slotUse,
  type EtcdHandle,
  type UpdaterHandle,
} from '../../testkit/index.js';
import { probe, PROBE_USER_AGENT } from '../../src/admission/probe.js';

const P = '/haproxy-discover';
const RISE = 2; // checkTiming(): HAProxy needs this many passing checks to admit a server itself
let etcd: EtcdHandle;
let stateDir: string;
let certDir: string;
let updater: UpdaterHandle;
let tlsCreds: { key: Buffer; cert: Buffer };
const closers: Array<() => Promise<void>> = [];

/** What reached one upstream. */
interface Counts {
  port: number;
  /** Client requests (any path but the health path). */
  hits: number;
  /** Time of the first client request (ms since epoch), 0 = none. */
  firstHitAt: number;
  /** HAProxy's checks seen when the first client request arrived (-1 = none arrived). */
  checksAtFirstHit: number;
  /** GETs of the health path by the updater's probe. */
  probes: number;
  /** GETs of the health path by anyone else (HAProxy's httpchk). */
  checks: number;
}

function counts(): Counts {
  return { port: 0, hits: 0, firstHitAt: 0, checksAtFirstHit: -1, probes: 0, checks: 0 };
}

function countRequest(c: Counts, url: string, userAgent: string | undefined): boolean {
  if (url === '/health') {
    if (userAgent === PROBE_USER_AGENT) c.probes++;
    else c.checks++;
    return true;
  }
  c.hits++;
  if (!c.firstHitAt) {
    c.firstHitAt = Date.now();
    c.checksAtFirstHit = c.checks;
  }
  return false;
}

async function listen(server: net.Server): Promise<number> {
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  closers.push(
    () =>
      new Promise<void>((r) => {
        (server as http.Server).closeAllConnections?.();
        server.close(() => r());
      }),
  );
  return (server.address() as net.AddressInfo).port;
}

/** HTTP (or HTTPS) upstream: `/health` answers `healthStatus`, every other path 200 `<id>`. */
async function httpUpstream(id: string, healthStatus: number, o: { tls?: boolean } = {}): Promise<Counts> {
  const c = counts();
  const handler: http.RequestListener = (req, res) => {
    const health = countRequest(c, req.url ?? '', req.headers['user-agent']);
    res.statusCode = health ? healthStatus : 200;
    res.end(health ? 'health\n' : `${id}\n`);
  };
  const server = o.tls ? https.createServer(tlsCreds, handler) : http.createServer(handler);
  server.keepAliveTimeout = 1000;
  c.port = await listen(server);
  return c;
}

/** Accepts connections, reads requests (counting them), never answers. */
async function silentUpstream(): Promise<Counts> {
  const c = counts();
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => undefined);
    s.on('data', (d) => {
      for (const m of d.toString('latin1').matchAll(/^GET (\S+) HTTP[^\r\n]*\r\n((?:[^\r\n]+\r\n)*)/gm)) {
        const ua = /^user-agent: *(.*)$/im.exec(m[2] ?? '')?.[1]?.trim();
        countRequest(c, m[1] ?? '', ua);
      }
    });
  });
  closers.push(async () => {
    for (const s of sockets) s.destroy();
  });
  c.port = await listen(server);
  return c;
}

async function metric(result: string): Promise<number> {
  const body = (await updater.get('/metrics')).body;
  const m = new RegExp(`^haproxy_updater_admission_probes_total\\{result="${result}"\\} (\\d+)`, 'm').exec(body);
  return m ? Number(m[1]) : 0;
}

async function routedTo(host: string, id: string): Promise<boolean> {
  const r = await runLoad({ url: `http://127.0.0.1:${updater.httpPort}/`, host, maxRequests: 1, concurrency: 1 });
  return Object.keys(r.bodies)[0] === id;
}

/**
 * Creates a service whose structure is complete from its first render (options and sslpass
 * before the upstream, the domain last), so no later structural reload races the test.
 */
async function createService(name: string, host: string, first: Counts, o: { options?: object; sslpass?: boolean } = {}): Promise<void> {
  const k = `${P}/http-services/${name}`;
  if (o.options) await etcd.ctl('put', `${k}/options`, JSON.stringify(o.options));
  if (o.sslpass) await etcd.ctl('put', `${k}/sslpass`, '1');
  await etcd.ctl('put', `${k}/upstreams/first`, `127.0.0.1:${first.port}`);
  await etcd.ctl('put', `${k}/domain`, host);
}

before(async () => {
  etcd = await startEtcd();
  stateDir = await tempDir('hu-admission-');
  certDir = await tempDir('hu-admission-tls-');
  await execFileP('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', path.join(certDir, 'k.pem'), '-out', path.join(certDir, 'c.pem'), '-days', '2', '-subj', '/CN=upstream.test']);
  tlsCreds = { key: await readFile(path.join(certDir, 'k.pem')), cert: await readFile(path.join(certDir, 'c.pem')) };
  updater = await startUpdater({ etcdEndpoint: etcd.endpoint, stateDir, extraArgs: ['--admission', 'probe'] });
});

after(async () => {
  await updater?.stop();
  await killHaproxy(path.join(stateDir, 'master.sock'));
  for (const close of closers) await close();
  await etcd?.destroy();
  await removeDir(stateDir);
  await removeDir(certDir);
});

test('probe verdicts against real servers: refused, HTTP 503, no answer (deadline), TLS handshake', async () => {
  const target = (port: number) => ({ addr: '127.0.0.1', port });
  const closed = await freePort();
  const ok = await httpUpstream('ok', 200);
  const sick = await httpUpstream('sick', 503);
  const silent = await silentUpstream();
  const secure = await httpUpstream('secure', 200, { tls: true });

  assert.equal((await probe(target(closed), { kind: 'tcp' }, 500)).result, 'refused');
  assert.equal((await probe(target(closed), { kind: 'http', path: '/health', tls: false }, 500)).result, 'refused');
  assert.equal((await probe(target(ok.port), { kind: 'tcp' }, 500)).result, 'ok');
  assert.equal((await probe(target(ok.port), { kind: 'http', path: '/health', tls: false }, 500)).result, 'ok');
  const bad = await probe(target(sick.port), { kind: 'http', path: '/health', tls: false }, 500);
  assert.deepEqual([bad.result, bad.detail, bad.ok], ['http-status', '503', false]);
  const slow = await probe(target(silent.port), { kind: 'http', path: '/health', tls: false }, 300);
  assert.equal(slow.result, 'timeout');
  assert.ok(slow.ms >= 290 && slow.ms < 2000, `the deadline bounds the probe: ${slow.ms} ms`);
  assert.equal((await probe(target(silent.port), { kind: 'tls' }, 300)).result, 'timeout', 'a handshake nobody answers');
  assert.equal((await probe(target(secure.port), { kind: 'tls' }, 500)).result, 'ok', 'TLS handshake completed');
  assert.equal((await probe(target(secure.port), { kind: 'http', path: '/health', tls: true }, 500)).result, 'ok', 'GET over TLS');
  assert.equal((await probe(target(ok.port), { kind: 'tls' }, 500)).result, 'tls', 'a plain HTTP server fails the handshake');
  // The probes were the only requests: none was a client request.
  for (const c of [ok, sick, silent, secure]) assert.equal(c.hits, 0);
  assert.equal(ok.probes, 1, 'the HTTP probe (the TCP one sends nothing)');
});

test('probe mode: a healthy upstream takes traffic before HAProxy could admit it; failing ones get no request; no reload', async () => {
  const stable = await httpUpstream('stable', 200);
  await createService('web', 'web.test', stable, { options: { healthPath: '/health', minSlots: 8 } });
  await waitFor(() => routedTo('web.test', 'stable'), { what: 'web routed', timeoutMs: 20_000 });
  const before = await masterView(updater.masterSocket);
  const m0 = { ok: await metric('ok'), refused: await metric('refused'), status: await metric('http-status'), timeout: await metric('timeout') };

  const abort = new AbortController();
  const load = runLoad({ url: `http://127.0.0.1:${updater.httpPort}/`, host: 'web.test', concurrency: 2, durationMs: 30_000, maxRequests: 40_000, signal: abort.signal });
  try {
    const refusedPort = await freePort();
    const sick = await httpUpstream('sick', 503);
    const silent = await silentUpstream();
    const good = await httpUpstream('good', 200);
    await etcd.ctl('put', `${P}/http-services/web/upstreams/refused`, `127.0.0.1:${refusedPort}`);
    await etcd.ctl('put', `${P}/http-services/web/upstreams/sick`, `127.0.0.1:${sick.port}`);
    await etcd.ctl('put', `${P}/http-services/web/upstreams/silent`, `127.0.0.1:${silent.port}`);
    await etcd.ctl('put', `${P}/http-services/web/upstreams/good`, `127.0.0.1:${good.port}`);

    await waitFor(() => good.hits > 0, { what: 'the good upstream takes traffic', timeoutMs: 10_000, intervalMs: 5 });
    assert.ok(good.probes >= 1, 'the updater probed it');
    assert.ok(good.checksAtFirstHit < RISE, `let in by the probe: ${good.checksAtFirstHit} HAProxy check(s) before its first request (rise ${RISE})`);
    // HAProxy's own checks carry on after `health up` (and keep it UP).
    await waitFor(() => good.checks >= 1, { what: "HAProxy's checks of the admitted server", timeoutMs: 10_000 });

    // Long enough for HAProxy's own checks of the failing ones to run (and fail) under load.
    await waitFor(() => sick.checks >= RISE && silent.checks >= 1, { what: "HAProxy's checks of the failing upstreams", timeoutMs: 10_000 });
    await sleep(500);
    assert.equal(sick.hits, 0, 'HTTP 503 upstream: no client request');
    assert.equal(silent.hits, 0, 'silent upstream: no client request');
    const rows = await readServers(updater.adminSocket);
    const use = (port: number) => rows.filter((r) => r.beName === 'http-web' && r.srvPort === port).map(slotUse);
    assert.deepEqual(use(refusedPort), ['down'], 'refused upstream held DOWN');
    assert.deepEqual(use(sick.port), ['down']);
    assert.deepEqual(use(silent.port), ['down']);
    assert.deepEqual(use(good.port), ['up']);
    assert.ok((await metric('ok')) - m0.ok >= 1, 'ok verdict counted');
    assert.ok((await metric('refused')) - m0.refused >= 1, 'refused verdict counted');
    assert.ok((await metric('http-status')) - m0.status >= 1, 'http-status verdict counted');
    assert.ok((await metric('timeout')) - m0.timeout >= 1, 'timeout verdict counted');
  } finally {
    abort.abort();
  }
  const r = await load;
  assert.equal(r.failed, 0, `load failures: ${JSON.stringify(r.failures)}`);
  const after = await masterView(updater.masterSocket);
  assert.equal(after.reloads, before.reloads, 'upstream additions need no reload');
});

test('probe mode: an overflow server (no free slot) is let in by the probe too', async () => {
  const first = await httpUpstream('ovf-0', 200);
  await createService('ovf', 'ovf.test', first, { options: { healthPath: '/health', minSlots: 1 } });
  await waitFor(() => routedTo('ovf.test', 'ovf-0'), { what: 'ovf routed', timeoutMs: 20_000 });
  const before = await masterView(updater.masterSocket);
  const second = await httpUpstream('ovf-1', 200);
  const abort = new AbortController();
  const load = runLoad({ url: `http://127.0.0.1:${updater.httpPort}/`, host: 'ovf.test', concurrency: 2, durationMs: 20_000, maxRequests: 20_000, signal: abort.signal });
  try {
    await etcd.ctl('put', `${P}/http-services/ovf/upstreams/b`, `127.0.0.1:${second.port}`);
    await waitFor(() => second.hits > 0, { what: 'the overflow upstream takes traffic', timeoutMs: 10_000, intervalMs: 5 });
  } finally {
    abort.abort();
  }
  const r = await load;
  const rows = await readServers(updater.adminSocket);
  const row = rows.find((x) => x.beName === 'http-ovf' && x.srvPort === second.port);
  assert.match(row?.srvName ?? '', /^x\d+$/, 'it sits on an overflow server');
  assert.ok(second.probes >= 1);
  assert.ok(second.checksAtFirstHit < RISE, `let in by the probe: ${second.checksAtFirstHit} HAProxy check(s) first`);
  assert.equal(r.failed, 0, JSON.stringify(r.failures));
  assert.equal((await masterView(updater.masterSocket)).reloads, before.reloads);
});

test('probe mode: an sslpass upstream is let in after a TLS handshake', async () => {
  const first = await httpUpstream('tls-0', 200, { tls: true });
  await createService('secure', 'secure.test', first, { sslpass: true });
  const get = () =>
    new Promise<string>((resolve) => {
      const req = https.get({ host: '127.0.0.1', port: updater.httpsPort, servername: 'secure.test', path: '/', rejectUnauthorized: false, agent: false, timeout: 2000 }, (res) => {
        let b = '';
        res.on('data', (d: Buffer) => (b += d.toString()));
        res.on('end', () => resolve(b.trim()));
      });
      req.on('error', () => resolve(''));
      req.on('timeout', () => req.destroy());
    });
  await waitFor(async () => (await get()) === 'tls-0', { what: 'secure routed', timeoutMs: 20_000 });
  const ok0 = await metric('ok');
  const second = await httpUpstream('tls-1', 200, { tls: true });
  await etcd.ctl('put', `${P}/http-services/secure/upstreams/b`, `127.0.0.1:${second.port}`);
  // Round robin over both once the second is in; bounded by waitFor's deadline.
  await waitFor(async () => (await get()) === 'tls-1', { what: 'the TLS upstream takes traffic', timeoutMs: 10_000, intervalMs: 10 });
  assert.ok((await metric('ok')) > ok0, 'a passing TLS probe was counted');
  assert.equal(second.probes, 0, 'a handshake, not an HTTP request');
});

test('200 upstream adds/removes under load with --admission probe: zero failed requests, zero reloads, every addition probed', async (t) => {
  const pool: Counts[] = [];
  for (let i = 0; i < 6; i++) pool.push(await httpUpstream(`churn-${i}`, 200));
  await createService('churn', 'churn.test', pool[0]!, { options: { healthPath: '/health' } });
  await waitFor(() => routedTo('churn.test', 'churn-0'), { what: 'churn routed', timeoutMs: 20_000 });
  const before = await masterView(updater.masterSocket);
  const ok0 = await metric('ok');
  const abort = new AbortController();
  const load = runLoad({ url: `http://127.0.0.1:${updater.httpPort}/`, host: 'churn.test', concurrency: 4, durationMs: 90_000, maxRequests: 100_000, signal: abort.signal });
  const key = (i: number) => `${P}/http-services/churn/upstreams/tmp-${i}`;
  let changes = 0;
  try {
    // 100 adds + 100 removes; each temporary upstream lives two rounds, so up to three sit
    // beside the stable one and slots are reused while earlier ones still drain.
    for (let i = 0; i < 102; i++) {
      if (i >= 2) {
        await etcd.ctl('del', key(i - 2));
        changes++;
      }
      if (i < 100) {
        await etcd.ctl('put', key(i), `127.0.0.1:${pool[1 + (i % 5)]!.port}`);
        changes++;
      }
      await sleep(100);
    }
    await sleep(1000);
  } finally {
    abort.abort();
  }
  const r = await load;
  const after = await masterView(updater.masterSocket);
  const probed = (await metric('ok')) - ok0;
  t.diagnostic(`${changes} changes; ok=${r.ok} failed=${r.failed}; probes ok ${probed}; reloads ${before.reloads}->${after.reloads}`);
  assert.equal(changes, 200);
  assert.equal(r.failed, 0, JSON.stringify(r.failures));
  assert.ok(r.ok > 500, `enough traffic flowed: ${r.ok}`);
  assert.equal(after.reloads, before.reloads, 'no reload');
  // Most additions are probed and let in; some are retired before their probe's batch ran.
  assert.ok(probed >= 50, `additions were probed: ${probed}`);
  assert.ok(pool.slice(1).reduce((n, c) => n + c.hits, 0) > 0, 'temporary upstreams took traffic');
});
