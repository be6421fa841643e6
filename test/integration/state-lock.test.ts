/**
 * One updater per state dir: a second `run` on a dir whose updater is alive exits 2 at once
 * naming the holder's PID and leaves the first serving; after a SIGKILL the stale lock is
 * taken over by the next `run`.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { readFile } from 'node:fs/promises';
import {
  BIN,
  startEtcd,
  startBackend,
  startUpdater,
  startProcess,
  stopProcess,
  runLoad,
  waitFor,
  tempDir,
  removeDir,
  freePort,
  masterView,
  killHaproxy,
  type EtcdHandle,
  type Backend,
} from '../../testkit/index.js';

const P = '/haproxy-discover';
let etcd: EtcdHandle;
let backend: Backend;
let stateDir: string;

before(async () => {
  etcd = await startEtcd();
  backend = await startBackend('lock-1');
  stateDir = await tempDir('hu-lock-');
  await etcd.ctl('put', `${P}/http-services/web/domain`, 'web.test');
  await etcd.ctl('put', `${P}/http-services/web/upstreams/lock-1`, `127.0.0.1:${backend.port}`);
});
after(async () => {
  await backend?.close();
  await etcd?.destroy();
  await removeDir(stateDir);
});

async function routed(port: number): Promise<boolean> {
  const r = await runLoad({ url: `http://127.0.0.1:${port}/`, host: 'web.test', maxRequests: 1, concurrency: 1 });
  return r.ok === 1;
}

test('a second run on a locked state dir exits 2 within 1 s naming the holder; the first keeps serving', async () => {
  const first = await startUpdater({ etcdEndpoint: etcd.endpoint, stateDir });
  try {
    await waitFor(async () => (await routed(first.httpPort)) || undefined, { what: 'web routed', timeoutMs: 15_000 });
    const lockPath = path.join(stateDir, 'updater.lock');
    assert.equal(Number((await readFile(lockPath, 'utf8')).trim()), first.proc.pid, 'the lock file holds the updater PID');

    const load = runLoad({ url: `http://127.0.0.1:${first.httpPort}/`, host: 'web.test', concurrency: 4, durationMs: 3000 });
    const t0 = Date.now();
    const second = startProcess(process.execPath, [BIN, 'run', '--etcd', etcd.endpoint, '--state-dir', stateDir, '--haproxy', 'managed',
      '--bind-address', '127.0.0.1', '--http-port', String(await freePort()), '--listen', `127.0.0.1:${await freePort()}`]);
    const code = await new Promise<number | null>((r) => second.child.once('exit', (c) => r(c)));
    const took = Date.now() - t0;
    // Node + tsx start-up is most of that on a busy CPU: measure it under the same load with `help`.
    const t1 = Date.now();
    const help = startProcess(process.execPath, [BIN, 'help']);
    await new Promise((r) => help.child.once('exit', r));
    const startup = Date.now() - t1;
    await stopProcess(second, 0);
    const result = await load;

    assert.equal(code, 2, second.output.join('\n'));
    assert.ok(took - startup < 1000, `second run exited ${took} ms after it was started (start-up alone: ${startup} ms)`);
    const msg = second.output.join('\n');
    assert.match(msg, new RegExp(`--state-dir ${stateDir}: in use by haproxy-updater PID ${first.proc.pid} \\(lock ${lockPath}\\)`));
    assert.equal(result.failed, 0, JSON.stringify(result.failures));
    assert.ok(result.ok > 0);
    assert.equal((await first.get('/readyz')).status, 200, 'the first updater is still ready');
  } finally {
    await first.stop();
  }
  await assert.rejects(readFile(path.join(stateDir, 'updater.lock')), /ENOENT/, 'lock removed on a clean stop');
});

test('the lock of a SIGKILLed updater is taken over by the next run, which adopts its HAProxy', async () => {
  const first = await startUpdater({ etcdEndpoint: etcd.endpoint, stateDir });
  const view = await waitFor(() => masterView(first.masterSocket), { what: 'managed HAProxy', timeoutMs: 15_000 });
  await first.kill();
  const lockPath = path.join(stateDir, 'updater.lock');
  assert.equal(Number((await readFile(lockPath, 'utf8')).trim()), first.proc.pid, 'a SIGKILLed updater leaves its lock');
  const next = await startUpdater({ etcdEndpoint: etcd.endpoint, stateDir, httpPort: first.httpPort, httpsPort: first.httpsPort });
  try {
    assert.equal(Number((await readFile(lockPath, 'utf8')).trim()), next.proc.pid, 'the new updater holds the lock');
    await waitFor(async () => (await routed(next.httpPort)) || undefined, { what: 'web routed after takeover', timeoutMs: 15_000 });
  } finally {
    await next.stop();
    await killHaproxy(first.masterSocket);
    assert.ok(view.masterPid > 0);
  }
});
