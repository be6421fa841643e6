/**
 * etcd over TLS with client-certificate authentication (etcd 3.4 `--client-cert-auth`,
 * https client URLs): the watcher, registerUpstream and `haproxy-updater render` connect
 * with the CA and a client certificate; without a client certificate, or with one from
 * another CA, the watcher never loads and keeps retrying until stopped.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { ETCDCTL_BIN, startEtcd, createTestCa, tempDir, removeDir, waitFor, sleep, execFileP, type EtcdHandle } from './harness.js';
import { BIN } from './updater.js';
import { RegistryWatcher, registerUpstream, type RegistryUpdate, type WatchState } from '../../src/watch/index.js';
import type { EtcdTlsOptions } from '../../src/watch/index.js';
import { EtcdUnavailableError } from '../../src/errors.js';

const P = '/haproxy-discover';
const H = `${P}/http-services`;

async function tlsEtcd(t: import('node:test').TestContext): Promise<EtcdHandle & { tls: NonNullable<EtcdHandle['tls']> }> {
  const etcd = await startEtcd({ tls: true });
  t.after(() => etcd.destroy());
  assert.match(etcd.endpoint, /^https:\/\/127\.0\.0\.1:\d+$/);
  assert.ok(etcd.tls, 'handle exposes the TLS files');
  return etcd as EtcdHandle & { tls: NonNullable<EtcdHandle['tls']> };
}

const get = async (etcd: EtcdHandle, key: string) => (await etcd.ctl('get', key, '--print-value-only')).replace(/\n$/, '');

test('a RegistryWatcher with a client certificate loads the registry over TLS and sees later puts', async (t) => {
  const etcd = await tlsEtcd(t);
  await etcd.ctl('put', `${H}/web/domain`, 'web.example');
  await etcd.ctl('put', `${H}/web/upstreams/w1`, '10.0.0.1:8080');

  const watcher = new RegistryWatcher({ endpoints: [etcd.endpoint], prefix: P, tls: etcd.tls });
  t.after(() => watcher.stop());
  const updates: RegistryUpdate[] = [];
  watcher.onUpdate((u) => updates.push(u));
  await watcher.start();
  assert.equal(watcher.state, 'watching');
  assert.equal(updates[0]?.cause, 'initial');
  assert.equal(watcher.current?.registry.http.get('web')?.upstreams.get('w1')?.port, 8080);

  await etcd.ctl('put', `${H}/web/upstreams/w2`, '10.0.0.2:8081');
  await waitFor(() => watcher.current?.registry.http.get('web')?.upstreams.get('w2')?.port === 8081, { timeoutMs: 5000, what: 'watcher sees the put' });
  assert.ok(updates.some((u) => u.cause === 'change'));
  assert.ok(updates.every((u) => !u.stale));
  await watcher.stop();
  assert.equal(watcher.state, 'stopped');
});

test('without a client certificate, or with one from another CA, the watcher never loads and keeps retrying', async (t) => {
  const etcd = await tlsEtcd(t);
  await etcd.ctl('put', `${H}/web/upstreams/w1`, '10.0.0.1:8080');
  // Baseline independent of src/: etcd itself refuses a client without a certificate.
  await assert.rejects(
    execFileP(ETCDCTL_BIN, ['--endpoints', etcd.endpoint, '--cacert', etcd.tls.ca, '--dial-timeout', '2s', '--command-timeout', '2s', 'get', '/x'], { env: { ...process.env, ETCDCTL_API: '3' } }),
  );

  const otherDir = await tempDir('hu-other-ca-');
  t.after(() => removeDir(otherDir));
  const other = await createTestCa(otherDir, 'other');
  const foreign = await other.issue('foreign-client', { usage: ['clientAuth'] });

  const cases: Array<[string, EtcdTlsOptions]> = [
    ['CA only, no client certificate', { ca: etcd.tls.ca }],
    ['client certificate from another CA', { ca: etcd.tls.ca, cert: foreign.cert, key: foreign.key }],
  ];
  await Promise.all(
    cases.map(async ([name, tls]) => {
      const watcher = new RegistryWatcher({ endpoints: [etcd.endpoint], prefix: P, tls, backoff: { initialMs: 100, maxMs: 400 }, requestTimeoutMs: 1000 });
      t.after(() => watcher.stop());
      const states: WatchState[] = [];
      let updates = 0;
      watcher.onStateChange((s) => states.push(s));
      watcher.onUpdate(() => updates++);
      let outcome: unknown = 'pending';
      const started = watcher.start().then(
        () => (outcome = 'resolved'),
        (err: unknown) => (outcome = err),
      );
      const settled = (): unknown => outcome; // read through a call: no narrowing across awaits
      await sleep(3000);
      assert.equal(settled(), 'pending', `${name}: start() still pending`);
      assert.notEqual(watcher.state, 'watching', name);
      assert.ok(!states.includes('watching'), `${name}: never watching (${states.join(' → ')})`);
      assert.equal(watcher.current, null, `${name}: no registry`);
      assert.equal(updates, 0, `${name}: no update emitted`);
      const attempts = states.filter((s) => s === 'connecting').length;
      assert.ok(attempts >= 2 && states.includes('disconnected'), `${name}: retried (${states.join(' → ')})`);
      t.diagnostic(`${name}: ${attempts} attempts in 3 s, last state ${watcher.state}`);

      await watcher.stop();
      await started;
      const rejection = settled();
      assert.ok(rejection instanceof EtcdUnavailableError, `${name}: start() rejects on stop (${String(rejection)})`);
      assert.equal(watcher.state, 'stopped');
    }),
  );
});

test('registerUpstream over TLS writes the key under a lease and close() removes it', async (t) => {
  const etcd = await tlsEtcd(t);
  const reg = await registerUpstream({ endpoints: [etcd.endpoint], prefix: P, tls: etcd.tls, kind: 'http', service: 'api', id: 'api-1', addr: '10.0.0.5', port: 9000, ttlSec: 5 });
  t.after(() => reg.close().catch(() => undefined));
  assert.equal(reg.key, `${H}/api/upstreams/api-1`);
  assert.equal(await get(etcd, reg.key), '10.0.0.5:9000');
  const leaseHex = BigInt(reg.leaseId).toString(16);
  assert.match(await etcd.ctl('lease', 'timetolive', leaseHex, '--keys'), new RegExp(`granted with TTL\\(5s\\).*${reg.key}`, 's'));
  await reg.close();
  assert.equal(await get(etcd, reg.key), '', 'key gone right after close()');
  assert.match(await etcd.ctl('lease', 'timetolive', leaseHex), /already expired/);
});

function cli(args: string[], env: NodeJS.ProcessEnv = process.env): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { timeout: 30_000, env }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

test('haproxy-updater render over TLS with --etcd-ca/--etcd-cert/--etcd-key, and with the default roots when --etcd-ca is absent', async (t) => {
  const etcd = await tlsEtcd(t);
  const dir = await tempDir('hu-render-tls-');
  t.after(() => removeDir(dir));
  await etcd.ctl('put', `${H}/shop/domain`, 'shop.example.com');
  await etcd.ctl('put', `${H}/shop/upstreams/s1`, '127.0.0.1:4000');
  const common = ['--etcd', etcd.endpoint, '--state-dir', dir, '--http-port', '8080', '--https-port', '0'];
  const r = await cli(['render', ...common, '--etcd-ca', etcd.tls.ca, '--etcd-cert', etcd.tls.cert, '--etcd-key', etcd.tls.key]);
  assert.equal(r.code, 0, r.stderr + r.stdout);
  assert.match(r.stdout, /^backend http-shop$/m);

  // Without --etcd-ca the default roots apply, as for the watcher. GRPC_DEFAULT_SSL_ROOTS_FILE_PATH
  // makes the test CA grpc-js's default roots; render used to pass an empty CA list instead
  // ("unable to verify the first certificate").
  const noCa = await cli(['render', ...common, '--etcd-cert', etcd.tls.cert, '--etcd-key', etcd.tls.key], { ...process.env, GRPC_DEFAULT_SSL_ROOTS_FILE_PATH: etcd.tls.ca });
  assert.equal(noCa.code, 0, noCa.stderr + noCa.stdout);
  assert.match(noCa.stdout, /^backend http-shop$/m);
});
