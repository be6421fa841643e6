/**
 * Signals reach the process that owns the work: SIGTERM to the outermost process of
 * `npx haproxy-updater run|register` (npm, which runs the bin through `sh -c`) or of
 * `node bin/haproxy-updater.js` stops the updater and what it started, and a registrar
 * removes its key. npm's shell dies of the forwarded signal; the bin notices it was orphaned.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { BIN, masterView, pidAlive, startEtcd, startProcess, stopProcess, waitFor, tempDir, removeDir, freePort, type EtcdHandle, type Proc } from '../../testkit/index.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const P = '/haproxy-discover';
let etcd: EtcdHandle;
before(async () => {
  etcd = await startEtcd();
});
after(() => etcd.destroy());


/** The PID the updater itself logs (pino's `pid` field): under npx it is not the child we spawned. */
async function updaterPid(proc: Proc): Promise<number> {
  return waitFor<number>(
    () => {
      for (const line of proc.output) {
        const m = /"pid":(\d+)/.exec(line);
        if (m) return Number(m[1]);
      }
      return 0;
    },
    { what: 'a log line with the updater PID', timeoutMs: 30_000 },
  );
}

async function runStopsCleanly(launcher: 'npx' | 'node'): Promise<void> {
  const dir = await tempDir('hu-signals-');
  const listen = await freePort();
  const runArgs = ['run', '--etcd', etcd.endpoint, '--state-dir', dir, '--haproxy', 'managed', '--bind-address', '127.0.0.1',
    '--http-port', String(await freePort()), '--https-port', String(await freePort()), '--listen', `127.0.0.1:${listen}`, '--log-level', 'info'];
  const proc = launcher === 'npx'
    ? startProcess('npx', ['--no-install', 'haproxy-updater', ...runArgs], { cwd: ROOT })
    : startProcess(process.execPath, [BIN, ...runArgs], { cwd: ROOT });
  let pids: number[] = [];
  try {
    const pid = await updaterPid(proc);
    const view = await waitFor(() => masterView(path.join(dir, 'master.sock')), { what: 'managed HAProxy', timeoutMs: 30_000 });
    pids = [pid, view.masterPid, ...view.workers];
    if (launcher === 'npx') assert.notEqual(pid, proc.child.pid, 'npx runs the updater below npm');
    proc.child.kill('SIGTERM');
    await waitFor(() => pids.every((p) => !pidAlive(p)) || undefined, { what: `no process left of ${pids.join(',')}`, timeoutMs: 10_000, intervalMs: 100 });
  } finally {
    for (const p of pids) if (pidAlive(p)) process.kill(p, 'SIGKILL');
    await stopProcess(proc, 1000);
    await removeDir(dir);
  }
}

test('SIGTERM to `npx haproxy-updater run` leaves no updater and no HAProxy', () => runStopsCleanly('npx'));
test('SIGTERM to `node bin/haproxy-updater.js run` leaves no updater and no HAProxy', () => runStopsCleanly('node'));

test('SIGTERM to `npx haproxy-updater register` removes the key and leaves no process', async () => {
  const key = `${P}/http-services/sig/upstreams/sig-1`;
  const proc = startProcess('npx', ['--no-install', 'haproxy-updater', 'register', '--etcd', etcd.endpoint, '--service', 'sig', '--addr', '127.0.0.1:3009', '--id', 'sig-1', '--ttl', '2s', '--log-level', 'info'], { cwd: ROOT });
  let pid = 0;
  try {
    pid = await updaterPid(proc);
    await waitFor(async () => (await etcd.ctl('get', key, '--print-value-only')).trim() !== '' || undefined, { what: 'registered', timeoutMs: 15_000 });
    proc.child.kill('SIGTERM');
    await waitFor(() => !pidAlive(pid) || undefined, { what: `registrar ${pid} gone`, timeoutMs: 10_000, intervalMs: 100 });
    // Removed by the registrar on its way out, not by the lease running out later.
    assert.equal((await etcd.ctl('get', key, '--print-value-only')).trim(), '', 'key removed at stop');
  } finally {
    if (pid && pidAlive(pid)) process.kill(pid, 'SIGKILL');
    await stopProcess(proc, 1000);
  }
});
