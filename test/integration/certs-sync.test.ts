/**
 * CertSync against a real HAProxy 2.6 serving TLS from a crt-list, with certificates made
 * by openssl, under a continuous, bounded stream of new TLS handshakes. Reloads are
 * counted on the master (`show proc`): every change here must take none.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { readFile, rename, rm, writeFile, mkdir, utimes } from 'node:fs/promises';
import path from 'node:path';
import { X509Certificate } from 'node:crypto';
import { CertSync, type CertSyncOptions } from '../../src/certs/sync.js';
import { validatePem } from '../../src/certs/pem.js';
import * as R from '../../src/runtime/index.js';
import { makeCa, makeExpiredLeaf, makeKey, makeLeaf, type Ca, type Pem } from '../fixtures/certs.js';
import { rootLogger } from '../../src/log.js';
import { freePort, handshake, percentile, removeDir, sleep, startHaproxy, tempDir, tlsLoad, serialsBetween, waitFor } from '../../testkit/index.js';

// Rejections are expected here and logged by design; keep the test output quiet unless asked.
if (!process.env.LOG_LEVEL) rootLogger.level = 'error';

const serialOf = (p: Pem) => new X509Certificate(p.cert).serialNumber.toUpperCase();

// ------------------------------------------------------------------ setup

interface Env {
  dir: string;
  certs: string;
  store: string;
  crtList: string;
  port: number;
  ca: Ca;
  defaultSerial: string;
  client: R.RuntimeClient;
  master: R.MasterClient;
  hp: Awaited<ReturnType<typeof startHaproxy>>;
  sync(o?: Partial<CertSyncOptions>): CertSync;
  /** Writes a PEM as certbot-like writers do: temp file, then rename. */
  put(file: string, text: string): Promise<void>;
  reloads(): Promise<number>;
}

async function setup(t: TestContext, o: { bufsize?: number } = {}): Promise<Env> {
  const dir = await tempDir('hu-certs-');
  // One hook, in order: stop the syncs (and their pass in flight), HAProxy, then remove files.
  const syncs: CertSync[] = [];
  let hp: Awaited<ReturnType<typeof startHaproxy>> | undefined;
  t.after(async () => {
    await Promise.all(syncs.map((s) => s.stop()));
    await hp?.stop();
    await removeDir(dir);
  });
  const certs = path.join(dir, 'certs');
  const store = path.join(dir, 'store');
  const crtList = path.join(dir, 'crt.list');
  await mkdir(certs);
  const ca = await makeCa(dir, 'Updater Test CA');
  const def = await makeLeaf(dir, ['default.test'], { ca });
  const defaultCert = path.join(dir, 'default.pem');
  await writeFile(defaultCert, def.cert + def.key);
  await writeFile(crtList, `${defaultCert}\n`);
  const port = await freePort();
  hp = await startHaproxy(
    `global
    stats socket {{DIR}}/admin.sock mode 600 level admin
    stats timeout 10s
${o.bufsize ? `    tune.bufsize ${o.bufsize}\n` : ''}defaults
    mode http
    timeout connect 2s
    timeout client 10s
    timeout server 10s
frontend fe
    bind 127.0.0.1:${port} ssl crt-list {{DIR}}/crt.list
    http-request return status 200 content-type text/plain string "ok"
`,
    { dir },
  );
  const client = new R.RuntimeClient({ path: hp.adminSocket }, o.bufsize ? { bufsize: o.bufsize } : {});
  const master = new R.MasterClient({ path: hp.masterSocket });
  let tmp = 0;
  return {
    dir,
    certs,
    store,
    crtList,
    port,
    ca,
    defaultSerial: serialOf(def),
    client,
    master,
    hp,
    sync: (extra = {}) => {
      const s = new CertSync({ dir: certs, storeDir: store, crtList, client, defaultCert, debounceMs: 50, settleMs: 1000, verifyIntervalMs: 0, ...extra });
      syncs.push(s);
      return s;
    },
    put: async (file, text) => {
      const t2 = path.join(certs, `.tmp-${process.pid}-${tmp++}`);
      await writeFile(t2, text);
      await rename(t2, path.join(certs, file));
    },
    reloads: async () => (await master.showProc()).reloads,
  };
}

/** Waits until a handshake for `sni` presents `serial`; returns the ms it took. */
async function servedWithin(e: Env, sni: string, serial: string, timeoutMs = 5000): Promise<number> {
  const t0 = performance.now();
  await waitFor(async () => (await handshake(e.port, sni)).serial === serial, { timeoutMs, intervalMs: 10, what: `${sni} serving ${serial}` });
  return performance.now() - t0;
}

// ------------------------------------------------------------------ tests

test('renewal: same name, new serial, presented by the next handshakes; 0 failed handshakes, 0 reloads', async (t) => {
  const e = await setup(t);
  const v1 = await makeLeaf(e.dir, ['one.test'], { ca: e.ca });
  await e.put('one.test.pem', v1.cert + e.ca.cert + v1.key);
  const sync = e.sync();
  const first = await sync.start();
  assert.deepEqual(first.added, [path.join(e.certs, 'one.test.pem')]);
  assert.equal((await handshake(e.port, 'one.test')).serial, serialOf(v1));
  const reloads = await e.reloads();

  const load = tlsLoad(e.port, ['one.test'], { concurrency: 4, maxMs: 20_000 });
  await sleep(300);
  const v2 = await makeLeaf(e.dir, ['one.test'], { ca: e.ca });
  const started = performance.now();
  await e.put('one.test.pem', v2.cert + e.ca.cert + v2.key);
  await servedWithin(e, 'one.test', serialOf(v2));
  const switched = performance.now();
  await sleep(300);
  const r = await load.stop();

  assert.equal(r.failed, 0, JSON.stringify(r.failures));
  assert.ok(r.ok > 50, `only ${r.ok} handshakes`);
  assert.deepEqual(serialsBetween(r, 'one.test', 0, started), [serialOf(v1)], 'old until the file was written');
  assert.deepEqual(serialsBetween(r, 'one.test', switched), [serialOf(v2)], 'new from the switch on');
  assert.deepEqual(new Set(r.serials.get('one.test')), new Set([serialOf(v1), serialOf(v2)]), 'no third certificate');
  assert.equal(await e.reloads(), reloads, 'no reload');
  const [served] = sync.served().values();
  assert.equal(served?.sha1, new X509Certificate(v2.cert).fingerprint.replaceAll(':', ''));
  // The on-disk state follows: the copy HAProxy would load at a reload is the new PEM.
  const v2pem = validatePem(v2.cert + e.ca.cert + v2.key);
  assert.ok(v2pem.ok);
  assert.equal(await readFile(path.join(e.store, 'one.test.pem'), 'utf8'), v2pem.lines.join('\n') + '\n');
});

test('a new SNI name is served within 2 s of being written, and a removed one falls back to the default; 0 reloads, 0 failures', async (t) => {
  const e = await setup(t);
  const sync = e.sync();
  await sync.start();
  const reloads = await e.reloads();
  assert.equal((await handshake(e.port, 'two.test')).serial, e.defaultSerial, 'before: default certificate');
  const load = tlsLoad(e.port, ['two.test', 'default.test'], { concurrency: 4, maxMs: 20_000 });

  const two = await makeLeaf(e.dir, ['two.test', 'www.two.test'], { ca: e.ca });
  const written = performance.now();
  await e.put('two.test.pem', two.cert + two.key);
  await servedWithin(e, 'two.test', serialOf(two));
  const servedAt = performance.now();
  const ms = servedAt - written;
  assert.ok(ms < 2000, `served after ${Math.round(ms)} ms`);
  assert.equal((await handshake(e.port, 'www.two.test')).serial, serialOf(two), 'every SAN is served');
  t.diagnostic(`new SNI served ${Math.round(ms)} ms after the write`);
  // The crt-list file is rewritten at the end of the pass that served it.
  await waitFor(async () => (await readFile(e.crtList, 'utf8')) === `${path.join(e.dir, 'default.pem')}\n${path.join(e.store, 'two.test.pem')}\n`, {
    what: 'crt-list lists two.test',
    timeoutMs: 2000,
  });

  const removedAt = performance.now();
  await rm(path.join(e.certs, 'two.test.pem'));
  await servedWithin(e, 'two.test', e.defaultSerial);
  const backAt = performance.now();
  await sleep(200);
  const r = await load.stop();
  assert.equal(r.failed, 0, JSON.stringify(r.failures));
  assert.deepEqual(serialsBetween(r, 'two.test', 0, written), [e.defaultSerial], 'default before the file');
  assert.deepEqual(serialsBetween(r, 'two.test', servedAt, removedAt), [serialOf(two)], 'the new certificate while the file is there');
  assert.deepEqual(serialsBetween(r, 'two.test', backAt), [e.defaultSerial], 'default again after removal');
  assert.equal(await e.reloads(), reloads, 'no reload');
  await waitFor(async () => (await readFile(e.crtList, 'utf8')) === `${path.join(e.dir, 'default.pem')}\n`, { what: 'crt-list rewritten', timeoutMs: 2000 });
  assert.ok(!existsSync(path.join(e.store, 'two.test.pem')), 'store copy removed');
  const held = R.parseSslCertList(await e.client.run(R.showSslCerts()));
  assert.deepEqual(held.certs, [path.join(e.dir, 'default.pem')], 'del ssl cert freed it');
});

test('invalid PEMs (key mismatch, truncated, expired, no key) are rejected with their path; the previous certificate keeps serving', async (t) => {
  const e = await setup(t);
  const good = await makeLeaf(e.dir, ['one.test'], { ca: e.ca });
  const file = path.join(e.certs, 'one.test.pem');
  await e.put('one.test.pem', good.cert + good.key);
  const sync = e.sync({ settleMs: 300 });
  await sync.start();
  const load = tlsLoad(e.port, ['one.test'], { concurrency: 2, maxMs: 30_000 });
  const renewed = await makeLeaf(e.dir, ['one.test'], { ca: e.ca });
  const expired = await makeExpiredLeaf(e.dir, 'one.test', e.ca);
  const cases: Array<[what: string, text: string, problem: string]> = [
    ['key mismatch', renewed.cert + (await makeKey(e.dir)), 'key-mismatch'],
    ['truncated', renewed.cert + renewed.key.slice(0, 50), 'truncated'],
    ['expired', expired.cert + expired.key, 'expired'],
    ['no key', renewed.cert, 'no-private-key'],
  ];
  const goodCopy = await readFile(path.join(e.store, 'one.test.pem'), 'utf8');
  for (const [what, text, problem] of cases) {
    await e.put('one.test.pem', text);
    // The truncated one is first held back as possibly half-written, then rejected after settleMs.
    const err = await waitFor(() => (sync.rejected().get(file)?.context.problem === problem ? sync.rejected().get(file) : undefined), {
      timeoutMs: 3000,
      what: `${what} rejected`,
    });
    assert.ok(err);
    assert.equal(err.path, file, what);
    assert.equal(err.code, 'E_CERT_FILE');
    assert.ok(err.message.startsWith(`${file}: `) && err.reason.length > 10, err.message);
    assert.equal((await handshake(e.port, 'one.test')).serial, serialOf(good), `${what}: the good certificate still serves`);
    assert.equal(await readFile(path.join(e.store, 'one.test.pem'), 'utf8'), goodCopy, `${what}: a reload would still load the good one`);
  }
  // A rejection is not final: the next good content is applied, and the rejection cleared.
  const renewedAt = performance.now();
  await e.put('one.test.pem', renewed.cert + renewed.key);
  await servedWithin(e, 'one.test', serialOf(renewed));
  const switched = performance.now();
  await waitFor(() => !sync.rejected().has(file), { timeoutMs: 2000, what: 'rejection cleared' });
  await sleep(200);
  const r = await load.stop();
  assert.equal(r.failed, 0, JSON.stringify(r.failures));
  assert.deepEqual(serialsBetween(r, 'one.test', 0, renewedAt), [serialOf(good)], 'only the good certificate while invalid files came and went');
  assert.deepEqual(serialsBetween(r, 'one.test', switched), [serialOf(renewed)]);
  assert.ok(sync.status().failedUpdates >= cases.length);
});

test('a half-written file is retried, not rejected: served once the writer finishes', async (t) => {
  const e = await setup(t);
  const sync = e.sync({ settleMs: 3000 });
  await sync.start();
  const three = await makeLeaf(e.dir, ['three.test'], { ca: e.ca });
  const full = three.cert + e.ca.cert + three.key;
  const file = path.join(e.certs, 'three.test.pem');
  await writeFile(file, full.slice(0, Math.floor(full.length / 2)));
  const pending = await waitFor(async () => {
    const r = await sync.verify();
    return r.pending.includes(file) ? r : null;
  }, { what: 'pending', timeoutMs: 2000 });
  assert.ok(pending);
  assert.deepEqual(pending.rejected, []);
  await sleep(400);
  await writeFile(file, full); // the writer finishes, in place
  await servedWithin(e, 'three.test', serialOf(three));
  assert.equal(sync.rejected().size, 0, 'never rejected');

  // An incomplete file that stays so past the settle time is rejected after all.
  const stale = path.join(e.certs, 'stale.test.pem');
  await writeFile(stale, full.slice(0, 100));
  const old = new Date(Date.now() - 10_000);
  await utimes(stale, old, old);
  const r = await sync.verify();
  assert.equal(r.rejected[0]?.path, stale);
  assert.equal(r.rejected[0]?.context.problem, 'truncated');
});

test('lost events: verify() repairs a change made while the watcher was not looking; the crt-list on disk serves the same after a reload', async (t) => {
  const e = await setup(t);
  const a = await makeLeaf(e.dir, ['a.test'], { ca: e.ca });
  const b = await makeLeaf(e.dir, ['b.test'], { ca: e.ca });
  await e.put('a.test.pem', a.cert + a.key);
  const s1 = e.sync();
  await s1.start();
  await s1.stop(); // no watcher from here on
  await e.put('b.test.pem', b.cert + b.key);
  const a2 = await makeLeaf(e.dir, ['a.test'], { ca: e.ca });
  await e.put('a.test.pem', a2.cert + a2.key);
  await sleep(300);
  assert.equal((await handshake(e.port, 'b.test')).serial, e.defaultSerial, 'nobody applied it yet');

  // A new instance (an updater restart): adopts nothing stale, applies both by content hash.
  const s2 = e.sync();
  const r = await s2.verify();
  assert.deepEqual(r.added, [path.join(e.certs, 'b.test.pem')]);
  assert.deepEqual(r.updated, [path.join(e.certs, 'a.test.pem')]);
  assert.equal((await s2.verify()).updated.length, 0, 'a second pass has nothing to do');
  assert.equal((await handshake(e.port, 'a.test')).serial, serialOf(a2));

  // A reload loads the crt-list and store copies from disk: the same certificates answer.
  await e.master.reload();
  assert.equal((await handshake(e.port, 'a.test')).serial, serialOf(a2));
  assert.equal((await handshake(e.port, 'b.test')).serial, serialOf(b));
  assert.equal((await handshake(e.port, 'zzz.test')).serial, e.defaultSerial);
  // And after it, a third instance finds everything in place (fingerprints match): no change sent.
  const s3 = e.sync();
  const r3 = await s3.verify();
  assert.deepEqual([r3.added, r3.updated, r3.removed], [[], [], []]);
});

test('200 certificates at start load in one go; 200 written at once while running are served (write → served p50/p99)', async (t) => {
  const e = await setup(t);
  const keyPath = (await makeLeaf(e.dir, ['key.test'])).keyPath;
  const key = await readFile(keyPath, 'utf8');
  const make = async (prefix: string) => {
    const out: Array<{ name: string; text: string; serial: string }> = [];
    for (let i = 0; i < 200; i++) {
      const name = `${prefix}${i}.test`;
      const p = await makeLeaf(e.dir, [name], { ca: e.ca, keyPath });
      out.push({ name, text: p.cert + key, serial: serialOf(p) });
    }
    return out;
  };
  const atStart = await make('s');
  const startWritten: number[] = [];
  for (const c of atStart) {
    await writeFile(path.join(e.certs, `${c.name}.pem`), c.text);
    startWritten.push(performance.now());
  }
  const sync = e.sync();
  const t0 = performance.now();
  const first = await sync.start();
  const startMs = performance.now() - t0;
  // Upper bound per certificate: from its write to the end of the start-up pass.
  const startLatency = startWritten.map((w) => performance.now() - w);
  assert.equal(first.added.length, 200);
  for (const c of [atStart[0]!, atStart[99]!, atStart[199]!]) assert.equal((await handshake(e.port, c.name)).serial, c.serial);
  assert.equal(R.parseSslCrtList(await e.client.run(R.showSslCrtList(e.crtList))).entries.length, 201);
  const reloads = await e.reloads();

  const running = await make('r');
  const writtenAt = new Map<string, number>();
  for (const c of running) {
    await writeFile(path.join(e.certs, `${c.name}.pem`), c.text);
    writtenAt.set(c.name, performance.now());
  }
  // "Served" = listed in HAProxy's crt-list (it is added only after its commit succeeded),
  // polled on the admin socket: cheap, so the measurement does not slow what it measures.
  // A sample is confirmed by real handshakes afterwards.
  const latency: number[] = [];
  const left = new Set(running.map((c) => c.name));
  const deadline = Date.now() + 60_000;
  while (left.size > 0 && Date.now() < deadline) {
    const listed = R.parseSslCrtList(await e.client.run(R.showSslCrtList(e.crtList))).entries;
    const now = performance.now();
    for (const l of listed) {
      const name = path.basename(l.cert, '.pem');
      if (left.delete(name)) latency.push(now - writtenAt.get(name)!);
    }
    await sleep(10);
  }
  assert.equal(left.size, 0, `${left.size} never served`);
  for (const c of [running[0]!, running[100]!, running[199]!]) assert.equal((await handshake(e.port, c.name)).serial, c.serial);
  assert.equal(await e.reloads(), reloads, 'no reload');
  const p50 = Math.round(percentile(latency, 50));
  const p99 = Math.round(percentile(latency, 99));
  t.diagnostic(
    `200 at start: start() ${Math.round(startMs)} ms (pass ${first.durationMs} ms), write→served p50 ${Math.round(percentile(startLatency, 50))} ms p99 ${Math.round(percentile(startLatency, 99))} ms; ` +
      `200 written while running: write→served p50 ${p50} ms, p99 ${p99} ms`,
  );
  assert.ok(p99 < 10_000);
});

test('payload limit: a chain over what tune.bufsize allows is refused with its path and HAProxy stays up; with tune.bufsize 65536 it is served', async (t) => {
  const chainCas = await (async () => {
    const d = await tempDir('hu-chain-');
    t.after(() => removeDir(d));
    const root = await makeCa(d, 'Chain Root');
    const chain: Ca[] = [];
    let parent = root;
    for (let i = 0; i < 30; i++) {
      parent = await makeCa(d, `Chain Intermediate ${i} padding padding padding padding`, parent);
      chain.unshift(parent);
    }
    const leaf = await makeLeaf(d, ['big.test'], { ca: parent });
    return { text: leaf.cert + chain.map((c) => c.cert).join('') + leaf.key, serial: serialOf(leaf) };
  })();
  assert.ok(chainCas.text.length > 17_000, `chain of ${chainCas.text.length} bytes`);

  const small = await setup(t);
  const s1 = small.sync();
  await s1.start();
  await small.put('big.test.pem', chainCas.text);
  const file = path.join(small.certs, 'big.test.pem');
  const err = await waitFor(() => s1.rejected().get(file), { timeoutMs: 3000, what: 'big rejected' });
  assert.ok(err);
  assert.equal(err.context.problem, 'too-large');
  assert.match(err.message, new RegExp(`^${file.replace(/[.+]/g, '\\$&')}: PEM of \\d+ bytes is over the 15360 bytes .*tune\\.bufsize 16384`));
  assert.equal((await handshake(small.port, 'big.test')).serial, small.defaultSerial);
  assert.ok((await small.master.showProc()).workers.length === 1, 'worker alive');

  const large = await setup(t, { bufsize: 65536 });
  const s2 = large.sync();
  await large.put('big.test.pem', chainCas.text);
  const r = await s2.start();
  assert.deepEqual(r.rejected, []);
  assert.equal((await handshake(large.port, 'big.test')).serial, chainCas.serial);
});

test('a transaction left open (an updater killed mid-update) is aborted first, so it cannot swallow the next certificate', async (t) => {
  const e = await setup(t);
  const a = await makeLeaf(e.dir, ['a.test'], { ca: e.ca });
  await e.put('a.test.pem', a.cert + a.key);
  const sync = e.sync();
  await sync.start();
  await sync.stop(); // passes only when asked, from here on
  // What a crash between `set` and `commit` leaves behind: an open transaction on a.test.
  const stale = await makeLeaf(e.dir, ['a.test'], { ca: e.ca });
  const stalePem = validatePem(stale.cert + stale.key);
  assert.ok(stalePem.ok);
  const aName = path.join(e.store, 'a.test.pem');
  assert.equal(R.parseSetSslCert(await e.client.run(R.setSslCert(aName, stalePem.lines)), aName), 'created');
  assert.equal(R.parseSslCertList(await e.client.run(R.showSslCerts())).transaction, aName);

  const b = await makeLeaf(e.dir, ['b.test'], { ca: e.ca });
  await e.put('b.test.pem', b.cert + b.key);
  const r = await sync.verify();
  assert.deepEqual(r.added, [path.join(e.certs, 'b.test.pem')]);
  assert.deepEqual(r.failed, []);
  assert.equal((await handshake(e.port, 'b.test')).serial, serialOf(b), 'b.test has its own certificate');
  assert.equal((await handshake(e.port, 'a.test')).serial, serialOf(a), 'a.test unchanged: the stale transaction was dropped');
  assert.equal(R.parseSslCertList(await e.client.run(R.showSslCerts())).transaction, null);
});
