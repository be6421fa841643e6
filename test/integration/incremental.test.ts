/**
 * Incremental passes against real etcd + the real `haproxy-updater run` (managed HAProxy):
 * a registry change reads and plans only the changed services, so drift made behind the
 * updater's back in another backend (a server put into maint, a map entry deleted over the
 * admin socket) is left to the verify pass — which must still repair it; and a rejected
 * entry changes nothing else, while a valid change beside it applies.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import {
  startEtcd,
  startBackend,
  tempDir,
  removeDir,
  waitFor,
  sleep,
  startUpdater,
  killHaproxy,
  socketCommand,
  httpRequest,
  type EtcdHandle,
  type Backend,
  type UpdaterHandle,
} from '../../testkit/index.js';

const P = '/haproxy-discover';
let etcd: EtcdHandle;
let stateDir: string;
let updater: UpdaterHandle;
const backends: Backend[] = [];

async function body(host: string): Promise<string> {
  const r = await httpRequest({ port: updater.httpPort, host, timeoutMs: 2000 });
  return r.ok ? r.body : '';
}

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

async function hostsMap(): Promise<string[]> {
  const text = await socketCommand(updater.adminSocket, `show map ${path.join(stateDir, 'hosts.map')}`);
  return text
    .split('\n')
    .map((l) => l.split(' ').slice(1).join(' '))
    .filter(Boolean)
    .sort();
}

before(async () => {
  etcd = await startEtcd();
  stateDir = await tempDir('hu-incr-');
  for (const id of ['a-0', 'a-1', 'b-0', 'b-1', 'b-2']) backends.push(await startBackend(id));
  const put = (k: string, v: string) => etcd.ctl('put', `${P}/http-services/${k}`, v);
  await put('a/domain', 'a.test');
  await put('b/domain', 'b.test');
  for (const b of backends.slice(0, 4)) await put(`${b.id[0]}/upstreams/${b.id}`, `127.0.0.1:${b.port}`);
  updater = await startUpdater({ etcdEndpoint: etcd.endpoint, stateDir, extraArgs: ['--verify-interval', '2s'] });
  await waitFor(async () => (await body('a.test')).startsWith('a-') && (await body('b.test')).startsWith('b-'), { what: 'a and b routed', timeoutMs: 15_000 });
});

after(async () => {
  await updater?.stop();
  await killHaproxy(path.join(stateDir, 'master.sock'));
  await Promise.all(backends.map((b) => b.close()));
  await etcd?.destroy();
  await removeDir(stateDir);
});

test('drift in one backend while another changes: the change applies, the verify pass repairs the drift', async () => {
  const a = await servers('http-a');
  const slot = a[0]!.split(' ')[0]!;
  // Behind the updater's back: a server of a into maint, a's domain out of the hosts map.
  await socketCommand(updater.adminSocket, `set server http-a/${slot} state maint`);
  await socketCommand(updater.adminSocket, `del map ${path.join(stateDir, 'hosts.map')} a.test`);
  const maint = (l: string) => (Number(/admin=(\d+)$/.exec(l)?.[1]) & 1) === 1; // SRV_ADMF_FMAINT
  assert.ok((await servers('http-a')).some((l) => l.startsWith(`${slot} `) && maint(l)), 'drift made');
  // Meanwhile a registry change to b: an incremental pass.
  const b2 = backends[4]!;
  await etcd.ctl('put', `${P}/http-services/b/upstreams/b-2`, `127.0.0.1:${b2.port}`);
  await waitFor(async () => (await servers('http-b')).some((l) => l.includes(`127.0.0.1:${b2.port} `) && !maint(l)), { what: 'b-2 in HAProxy', timeoutMs: 5000 });
  // The verify pass (every 2 s here) reads everything and repairs a.
  await waitFor(async () => (await servers('http-a')).join('\n') === a.join('\n'), { what: 'maint drift repaired', timeoutMs: 10_000 });
  await waitFor(async () => (await hostsMap()).includes('a.test http-a'), { what: 'map entry restored', timeoutMs: 10_000 });
  assert.ok((await body('a.test')).startsWith('a-'), 'a routed again');
});

test('a rejected entry changes nothing else; a valid change beside it applies', async () => {
  await sleep(500);
  const before = { a: await servers('http-a'), b: await servers('http-b'), map: await hostsMap() };
  await etcd.ctl('put', `${P}/http-services/b/upstreams/bad`, '127.0.0.1:99999');
  await etcd.ctl('put', `${P}/http-services/a/upstreams/bad`, JSON.stringify({ addr: '127.0.0.1:1', color: 'red' }));
  await waitFor(async () => /^haproxy_updater_registry_rejected_entries 2$/m.test((await updater.get('/metrics')).body), { what: 'two rejections reported', timeoutMs: 5000 });
  await sleep(300);
  assert.deepEqual({ a: await servers('http-a'), b: await servers('http-b'), map: await hostsMap() }, before, 'HAProxy unchanged');
  // A valid change in the same service as a rejected entry still applies.
  await etcd.ctl('put', `${P}/http-services/b/domain`, 'b.test, www.b.test');
  await waitFor(async () => (await body('www.b.test')).startsWith('b-'), { what: 'www.b.test routed', timeoutMs: 5000 });
  assert.deepEqual(await servers('http-b'), before.b, 'b servers unchanged');
});
