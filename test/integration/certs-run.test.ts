/**
 * Certificates at runtime through the real `haproxy-updater run --certs <dir>` (managed
 * HAProxy, real etcd, a TLS-terminated http service): PEM files written into the directory
 * are served with no reload, under a bounded stream of new TLS handshakes with SNI against
 * the https port. Reloads are read from HAProxy's master CLI, never from the updater.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import https from 'node:https';
import path from 'node:path';
import { X509Certificate } from 'node:crypto';
import { makeCa, makeKey, makeLeaf, type Ca, type Pem } from '../fixtures/certs.js';
import {
  handshake,
  killHaproxy,
  masterView,
  removeDir,
  startBackend,
  startEtcd,
  startUpdater,
  tempDir,
  tlsLoad,
  serialsBetween,
  waitFor,
  type Backend,
  type EtcdHandle,
  type UpdaterHandle,
} from '../../testkit/index.js';

const P = '/haproxy-discover';
/** The CN of the default certificate the updater generates. */
const DEFAULT_CN = 'default.invalid';
let etcd: EtcdHandle;
let dir: string;
let certs: string;
let ca: Ca;
let updater: UpdaterHandle;
const backends: Backend[] = [];

const serialOf = (p: Pem) => new X509Certificate(p.cert).serialNumber.toUpperCase();

/** As certbot hooks and secret mounts do: a hidden temp file, then rename into place. */
async function put(name: string, text: string): Promise<void> {
  const tmp = path.join(certs, `.${name}.tmp`);
  await writeFile(tmp, text);
  await rename(tmp, path.join(certs, name));
}

const reloads = async () => (await masterView(updater.masterSocket)).reloads;
const serving = async (sni: string) => handshake(updater.httpsPort, sni);

before(async () => {
  etcd = await startEtcd();
  dir = await tempDir('hu-certs-run-');
  certs = path.join(dir, 'certs');
  await mkdir(certs);
  ca = await makeCa(dir, 'certs-run-ca');
  await put('a.test.pem', await pemOf(['a.test']));
  backends.push(await startBackend('web-0'));
  await etcd.ctl('put', `${P}/http-services/web/domain`, 'a.test');
  await etcd.ctl('put', `${P}/http-services/web/upstreams/w0`, `127.0.0.1:${backends[0]!.port}`);
  updater = await startUpdater({ etcdEndpoint: etcd.endpoint, stateDir: path.join(dir, 'state'), extraArgs: ['--certs', certs] });
  await waitFor(async () => (await serving('a.test')).cn === 'a.test', { what: 'a.test served at start', timeoutMs: 15_000 });
});

after(async () => {
  await updater?.stop();
  if (dir) await killHaproxy(path.join(dir, 'state', 'master.sock'));
  await Promise.all(backends.map((b) => b.close()));
  await etcd?.destroy();
  if (dir) await removeDir(dir);
});

async function pemOf(names: string[]): Promise<string> {
  const leaf = await makeLeaf(dir, names, { ca });
  return leaf.cert + leaf.key;
}

test('the TLS-terminated service answers over https with the certificate from --certs', async () => {
  const get = () => new Promise<string>((resolve, reject) => {
    const req = https.get({ host: '127.0.0.1', port: updater.httpsPort, path: '/', servername: 'a.test', headers: { host: 'a.test' }, rejectUnauthorized: false, timeout: 5000 }, (res) => {
      let text = '';
      res.setEncoding('utf8').on('data', (d: string) => (text += d)).on('end', () => resolve(`${res.statusCode} ${text.trim()}`));
    });
    req.on('timeout', () => req.destroy(new Error('timeout'))).on('error', reject);
  });
  // The upstream is admitted once the updater's probe passed.
  await waitFor(async () => (await get()) === '200 web-0', { what: 'web routed over https', timeoutMs: 15_000 });
  assert.equal((await serving('a.test')).cn, 'a.test');
  const crtList = await readFile(path.join(dir, 'state', 'certs.crtlist'), 'utf8');
  assert.deepEqual(crtList.trim().split('\n'), [path.join(dir, 'state', 'default-cert.pem'), path.join(dir, 'state', 'certs', 'a.test.pem')]);
});

test('a new PEM is served for its SNI name within 2 s, 0 reloads; unknown names get the default', async (t) => {
  const before = await reloads();
  assert.equal((await serving('b.test')).cn, DEFAULT_CN, 'before: the default certificate');
  const pem = await pemOf(['b.test']);
  const written = Date.now();
  await put('b.test.pem', pem);
  await waitFor(async () => (await serving('b.test')).cn === 'b.test', { what: 'b.test served', timeoutMs: 2000, intervalMs: 20 });
  t.diagnostic(`new SNI name served ${Date.now() - written} ms after the file was written`);
  assert.equal(await reloads(), before, 'no reload');
  assert.equal((await serving('nothing.test')).cn, DEFAULT_CN);
});

test('renewal (same name, new serial) is presented by the next handshakes: 0 failed handshakes, 0 reloads', async (t) => {
  const before = await reloads();
  const oldSerial = (await serving('a.test')).serial;
  const renewed = await makeLeaf(dir, ['a.test'], { ca });
  const load = tlsLoad(updater.httpsPort, ['a.test'], { concurrency: 4, maxMs: 20_000, max: 20_000 });
  await waitFor(async () => (await serving('a.test')).serial === oldSerial, { what: 'load running', timeoutMs: 1000 });
  const writtenAt = performance.now();
  await put('a.test.pem', renewed.cert + renewed.key);
  await waitFor(async () => (await serving('a.test')).serial === serialOf(renewed), { what: 'renewed served', timeoutMs: 3000, intervalMs: 20 });
  const switched = performance.now();
  // Some more handshakes after the switch, all with the new serial.
  await new Promise((r) => setTimeout(r, 300));
  const r = await load.stop();
  t.diagnostic(`handshakes ok=${r.ok} failed=${r.failed}`);
  assert.equal(r.failed, 0, JSON.stringify(r.failures));
  assert.ok(r.ok > 20, `handshakes ran (${r.ok})`);
  assert.deepEqual(serialsBetween(r, 'a.test', 0, writtenAt), [oldSerial], 'old until the file was written');
  assert.deepEqual(serialsBetween(r, 'a.test', switched), [serialOf(renewed)], 'new from the switch on: never back');
  assert.equal(await reloads(), before, 'no reload');
});

test('an invalid PEM is rejected with its path in /metrics and /readyz; the previous certificate keeps serving', async () => {
  const before = await reloads();
  const served = (await serving('a.test')).serial;
  const good = await makeLeaf(dir, ['a.test'], { ca });
  const file = path.join(certs, 'a.test.pem');
  await put('a.test.pem', good.cert + (await makeKey(dir)));
  await waitFor(async () => (await updater.get('/metrics')).body.includes(`haproxy_updater_certificate_rejected{path="${file}",reason="key-mismatch"} 1`), {
    what: 'rejection in /metrics',
    timeoutMs: 5000,
  });
  const ready = await updater.get('/readyz');
  assert.equal(ready.status, 200, 'a rejected file does not make the updater unready');
  assert.match(ready.body, new RegExp(`certificate file rejected: ${file.replace(/[.]/g, '\\.')}: `));
  assert.match((await updater.get('/metrics')).body, /haproxy_updater_certificate_update_failures_total\{reason="key-mismatch"\} [1-9]/);
  assert.equal((await serving('a.test')).serial, served, 'the previous certificate keeps serving');
  // Fixed: served, and the rejection is gone.
  await put('a.test.pem', good.cert + good.key);
  await waitFor(async () => (await serving('a.test')).serial === serialOf(good), { what: 'fixed file served', timeoutMs: 3000 });
  await waitFor(async () => !(await updater.get('/metrics')).body.includes('haproxy_updater_certificate_rejected{'), { what: 'rejection cleared', timeoutMs: 3000 });
  assert.equal(await reloads(), before, 'no reload');
});

test('a removed PEM stops being served (the default answers), 0 reloads', async () => {
  const before = await reloads();
  assert.equal((await serving('b.test')).cn, 'b.test');
  await rm(path.join(certs, 'b.test.pem'));
  await waitFor(async () => (await serving('b.test')).cn === DEFAULT_CN, { what: 'b.test falls back to the default', timeoutMs: 3000, intervalMs: 20 });
  assert.equal(await reloads(), before, 'no reload');
});

test('metrics: certificates served and days to the soonest expiry', async () => {
  const m = (await updater.get('/metrics')).body;
  assert.match(m, /^haproxy_updater_certificates_served 1$/m, 'a.test only (b.test removed, the default not counted)');
  const days = Number(/^haproxy_updater_certificate_expiry_days (\S+)$/m.exec(m)?.[1]);
  // The fixtures' leaves are valid for 2 days.
  assert.ok(days > 1 && days <= 2, `expiry days ${days}`);
});

test('after a structural reload (new service) the same certificates are served', async () => {
  await put('c.test.pem', await pemOf(['c.test']));
  await waitFor(async () => (await serving('c.test')).cn === 'c.test', { what: 'c.test served', timeoutMs: 3000 });
  const a = (await serving('a.test')).serial;
  const c = (await serving('c.test')).serial;
  const before = await reloads();
  const api = await startBackend('api-0');
  backends.push(api);
  // A health check needs config lines: a reload on every version (3.4+ adds plain services at runtime).
  await etcd.ctl('put', `${P}/http-services/api/options`, JSON.stringify({ healthPath: '/health' }));
  await etcd.ctl('put', `${P}/http-services/api/domain`, 'api.test');
  await etcd.ctl('put', `${P}/http-services/api/upstreams/a0`, `127.0.0.1:${api.port}`);
  await waitFor(async () => (await reloads()) > before, { what: 'reload for the new service', timeoutMs: 15_000 });
  await waitFor(async () => (await masterView(updater.masterSocket)).oldWorkers.length === 0, { what: 'old worker gone', timeoutMs: 15_000 });
  // Connections now reach the new worker, which loaded the crt-list and copies from disk.
  assert.equal((await serving('a.test')).serial, a);
  assert.equal((await serving('c.test')).serial, c);
  assert.equal((await serving('b.test')).cn, DEFAULT_CN, 'the removed one stays removed');
});
