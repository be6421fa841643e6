/**
 * `--access-log stdout` in managed mode: a request through HAProxy is one JSON line on the
 * updater's stdout, as HAProxy wrote it (not inside a pino envelope), with status, backend
 * and termination state. And `plan`, asked with other render flags than the running updater's,
 * reports the reload `run` would do for them.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { BIN, execFileP, startEtcd, startBackend, startUpdater, runLoad, waitFor, tempDir, removeDir, type EtcdHandle, type Backend, type UpdaterHandle } from '../../testkit/index.js';

const P = '/haproxy-discover';
let etcd: EtcdHandle;
let backend: Backend;
let stateDir: string;
let updater: UpdaterHandle;

before(async () => {
  etcd = await startEtcd();
  backend = await startBackend('log-1');
  stateDir = await tempDir('hu-access-log-');
  await etcd.ctl('put', `${P}/http-services/web/domain`, 'web.test');
  await etcd.ctl('put', `${P}/http-services/web/upstreams/log-1`, `127.0.0.1:${backend.port}`);
  updater = await startUpdater({ etcdEndpoint: etcd.endpoint, stateDir, extraArgs: ['--access-log', 'stdout'] });
});
after(async () => {
  await updater?.stop();
  await backend?.close();
  await etcd?.destroy();
  await removeDir(stateDir);
});

test('a request through HAProxy is one JSON access-log line with status, backend and termination state', async () => {
  await waitFor(async () => (await runLoad({ url: `http://127.0.0.1:${updater.httpPort}/`, host: 'web.test', maxRequests: 1, concurrency: 1 })).ok === 1 || undefined, {
    what: 'web routed',
    timeoutMs: 15_000,
  });
  const path = `/probe-${process.pid}`;
  const r = await runLoad({ url: `http://127.0.0.1:${updater.httpPort}${path}`, host: 'web.test', maxRequests: 1, concurrency: 1 });
  assert.equal(r.ok, 1);
  const line = await waitFor<string | undefined>(() => updater.proc.output.find((l) => l.includes(path)), { what: 'access-log line for the probe', timeoutMs: 5000 });
  assert.ok(line?.startsWith('{"type":"haproxy"'), `passed on as HAProxy wrote it, not wrapped: ${line}`);
  const entry = JSON.parse(line ?? '') as Record<string, unknown>;
  assert.equal(entry.http_status, 200);
  assert.match(String(entry.backend_name), /web/);
  assert.equal(entry.termination_state, '--');
  assert.equal(entry.upstream_addr, '127.0.0.1');
  assert.match(String(entry.http_request), new RegExp(`^GET ${path} HTTP/1\\.1$`));
  assert.equal(updater.proc.output.filter((l) => l.includes(path)).length, 1, 'one line per request');
});

test('plan with the running flags says no reload; with another --http-port it names the settings change', async () => {
  const planWith = async (httpPort: number) => {
    const { stdout } = await execFileP(process.execPath, [BIN, 'plan', '--etcd', etcd.endpoint, '--state-dir', stateDir, '--bind-address', '127.0.0.1',
      '--http-port', String(httpPort), '--https-port', String(updater.httpsPort), '--access-log', 'stdout', '--log-level', 'warn']);
    return stdout;
  };
  assert.match(await planWith(updater.httpPort), /^reload: not needed$/m);
  const other = await planWith(updater.httpPort === 65000 ? 65001 : 65000);
  assert.match(other, /^reload: now \(settings\)$/m);
  assert.match(other, /^reason \[urgent\] settings: /m);
});
