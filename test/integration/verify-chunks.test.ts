/**
 * Verify in chunks (issue #10): with more backends than one verify tick reads (48), each tick
 * re-reads and repairs the next chunk of backends and a full verify pass follows each whole
 * rotation. Drift made behind the updater's back in any chunk is still repaired, and a
 * registry change made meanwhile applies at once.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { startEtcd, startBackend, tempDir, removeDir, waitFor, startUpdater, killHaproxy, socketCommand, type EtcdHandle, type Backend, type UpdaterHandle } from '../../testkit/index.js';

const P = '/haproxy-discover';
const SERVICES = 60;
const name = (i: number) => `s${String(i).padStart(2, '0')}`;
let etcd: EtcdHandle;
let stateDir: string;
let updater: UpdaterHandle;
let upstream: Backend;
let extra: Backend;

/** `slot addr:port admin` of a backend's servers holding an address, sorted. */
async function servers(be: string): Promise<string[]> {
  const text = await socketCommand(updater.adminSocket, `show servers state ${be}`);
  return text
    .split('\n')
    .filter((l) => l.startsWith(`${/^\d+/.exec(l)?.[0] ?? 'x'} ${be} `))
    .map((l) => l.split(' '))
    .filter((f) => f[4] !== '0.0.0.0')
    .map((f) => `${f[3]} ${f[4]}:${f[18]} admin=${f[6]}`)
    .sort();
}

const maint = (l: string) => (Number(/admin=(\d+)$/.exec(l)?.[1]) & 1) === 1; // SRV_ADMF_FMAINT

before(async () => {
  etcd = await startEtcd();
  stateDir = await tempDir('hu-vchunk-');
  upstream = await startBackend('u');
  extra = await startBackend('x');
  for (let i = 0; i < SERVICES; i++) {
    await etcd.ctl('put', `${P}/http-services/${name(i)}/domain`, `${name(i)}.test`);
    await etcd.ctl('put', `${P}/http-services/${name(i)}/upstreams/u`, `127.0.0.1:${upstream.port}`);
  }
  updater = await startUpdater({ etcdEndpoint: etcd.endpoint, stateDir, extraArgs: ['--verify-interval', '300ms'] });
  await waitFor(async () => (await servers(`http-${name(SERVICES - 1)}`)).length === 1, { what: 'all services in HAProxy', timeoutMs: 20_000 });
});

after(async () => {
  await updater?.stop();
  await killHaproxy(path.join(stateDir, 'master.sock'));
  await upstream?.close();
  await extra?.close();
  await etcd?.destroy();
  await removeDir(stateDir);
});

test('drift in backends of the first and the last chunk is repaired; a change meanwhile applies', async () => {
  const targets = [`http-${name(3)}`, `http-${name(SERVICES - 2)}`];
  const wanted = new Map<string, string[]>();
  for (const be of targets) {
    const s = await servers(be);
    wanted.set(be, s);
    const slot = s[0]!.split(' ')[0]!;
    await socketCommand(updater.adminSocket, `set server ${be}/${slot} state maint`);
    assert.ok((await servers(be)).some(maint), `drift made in ${be}`);
  }
  await etcd.ctl('put', `${P}/http-services/${name(10)}/upstreams/x`, `127.0.0.1:${extra.port}`);
  await waitFor(async () => (await servers(`http-${name(10)}`)).some((l) => l.includes(`127.0.0.1:${extra.port} `)), { what: 'added upstream in HAProxy', timeoutMs: 5000 });
  for (const be of targets) await waitFor(async () => (await servers(be)).join('\n') === wanted.get(be)!.join('\n'), { what: `maint drift in ${be} repaired`, timeoutMs: 10_000 });
  // The rotation read some chunks as scoped passes rather than everything each tick.
  const metrics = (await updater.get('/metrics')).body;
  const incremental = Number(/^haproxy_updater_pass_duration_seconds_count\{kind="incremental"\} (\d+)/m.exec(metrics)?.[1] ?? 0);
  assert.ok(incremental >= 3, `verify chunks ran as scoped passes (${incremental} incremental passes, one of them the change)`);
});
