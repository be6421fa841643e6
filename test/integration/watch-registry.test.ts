/**
 * RegistryWatcher against a real etcd 3.4: initial load, every key kind put and deleted,
 * hostile values rejected while their siblings apply, bursts coalesced without loss.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Etcd3 } from 'etcd3';
import { startEtcd, waitFor, sleep } from '../../testkit/index.js';
import { RegistryWatcher, type RegistryUpdate } from '../../src/watch/index.js';
import { DEFAULT_OPTIONS, type HttpService, type Rejection, type TcpService } from '../../src/model.js';

const P = '/haproxy-discover';
const H = `${P}/http-services`;
const T = `${P}/tcp-services`;

async function setup(t: import('node:test').TestContext, opts: { coalesceMs?: number; maxBatchDelayMs?: number } = {}) {
  const etcd = await startEtcd();
  t.after(() => etcd.destroy());
  const client = new Etcd3({ hosts: etcd.endpoint });
  t.after(() => client.close());
  const updates: RegistryUpdate[] = [];
  const rejected: Rejection[] = [];
  const watcher = new RegistryWatcher({ endpoints: [etcd.endpoint], prefix: P, onRejection: (r) => rejected.push(r), ...opts });
  watcher.onUpdate((u) => updates.push(u));
  t.after(() => watcher.stop());
  return { etcd, client, watcher, updates, rejected };
}

const http = (w: RegistryWatcher, name: string) => w.current?.registry.http.get(name) as HttpService | undefined;
const tcp = (w: RegistryWatcher, name: string) => w.current?.registry.tcp.get(name) as TcpService | undefined;

test('initial load, then put and delete of every key kind reflected', async (t) => {
  const { client, watcher, updates } = await setup(t);
  await client.put(`${H}/default/domain`).value('example.com');
  await client.put(`${H}/default/upstreams/d1`).value('10.0.0.1:80');
  await client.put(`${T}/db/ports`).value('5432');
  await client.put(`${T}/db/upstreams/p1`).value('10.0.1.1:5432');
  await client.put(`/elsewhere/http-services/x/domain`).value('not ours.example');

  await watcher.start();
  assert.equal(watcher.state, 'watching');
  assert.equal(updates.length, 1);
  assert.equal(updates[0]!.cause, 'initial');
  assert.equal(updates[0]!.stale, false);
  assert.deepEqual(http(watcher, 'default')!.domains, ['example.com']);
  assert.deepEqual([...http(watcher, 'default')!.upstreams.keys()], ['d1']);
  assert.deepEqual(tcp(watcher, 'db')!.ports, [5432]);
  assert.equal(watcher.current!.registry.http.size, 1, 'keys outside the prefix are not read');

  const until = (what: string, fn: () => boolean) => waitFor(fn, { timeoutMs: 5000, what });
  const steps: Array<[string, () => unknown, () => boolean]> = [
    ['http domain put', () => client.put(`${H}/web/domain`).value('www.example.com,api.example.com'), () => http(watcher, 'web')?.domains.join() === 'api.example.com,www.example.com'],
    ['http url_reg put', () => client.put(`${H}/web/url_reg`).value('^/api/'), () => http(watcher, 'web')?.urlReg === '^/api/'],
    ['http sslpass put', () => client.put(`${H}/web/sslpass`).value('true'), () => http(watcher, 'web')?.sslPassthrough === true],
    ['http options put', () => client.put(`${H}/web/options`).value('{"balance":"leastconn","healthPath":"/hc"}'), () => http(watcher, 'web')?.options.healthPath === '/hc'],
    ['http upstream put', () => client.put(`${H}/web/upstreams/w1`).value('{"addr":"[::1]:8080","weight":7}'), () => http(watcher, 'web')?.upstreams.get('w1')?.weight === 7],
    ['http upstream change', () => client.put(`${H}/web/upstreams/w1`).value('{"addr":"[::1]:8080","state":"drain"}'), () => http(watcher, 'web')?.upstreams.get('w1')?.state === 'drain'],
    ['tcp ports put', () => client.put(`${T}/db/ports`).value('5432,6432'), () => tcp(watcher, 'db')?.ports.join() === '5432,6432'],
    ['tcp options put', () => client.put(`${T}/db/options`).value('{"maxconn":10}'), () => tcp(watcher, 'db')?.options.maxconn === 10],
    ['tcp upstream put', () => client.put(`${T}/db/upstreams/p2`).value('10.0.1.2:5432'), () => tcp(watcher, 'db')?.upstreams.has('p2') === true],
    ['http domain delete', () => client.delete().key(`${H}/web/domain`), () => http(watcher, 'web')?.domains.length === 0],
    ['http url_reg delete', () => client.delete().key(`${H}/web/url_reg`), () => http(watcher, 'web')?.urlReg === null],
    ['http sslpass delete', () => client.delete().key(`${H}/web/sslpass`), () => http(watcher, 'web')?.sslPassthrough === false],
    ['http options delete', () => client.delete().key(`${H}/web/options`), () => http(watcher, 'web')?.options === DEFAULT_OPTIONS],
    ['http upstream delete', () => client.delete().key(`${H}/web/upstreams/w1`), () => watcher.current!.registry.http.get('web') === undefined],
    ['tcp ports delete', () => client.delete().key(`${T}/db/ports`), () => tcp(watcher, 'db')?.ports.length === 0],
    ['tcp options delete', () => client.delete().key(`${T}/db/options`), () => tcp(watcher, 'db')?.options === DEFAULT_OPTIONS],
    ['tcp upstream delete', () => client.delete().key(`${T}/db/upstreams/p2`), () => tcp(watcher, 'db')?.upstreams.size === 1],
    ['tcp service gone with its last key', () => client.delete().prefix(`${T}/db/`), () => watcher.current!.registry.tcp.size === 0],
  ];
  for (const [what, act, check] of steps) {
    await act();
    await until(what, check);
  }
  assert.ok(updates.slice(1).every((u) => u.cause === 'change' && !u.stale && u.changes >= 1));
  assert.equal(watcher.stats.resyncs, 0);
  assert.equal(watcher.current!.rejections.length, 0);
  // The registry revision follows etcd's.
  const rev = (await client.get(`${H}/default/domain`).exec()).header.revision;
  assert.equal(watcher.current!.registry.revision, rev);
});

test('hostile values are rejected while their siblings are applied', async (t) => {
  const { client, watcher, rejected } = await setup(t);
  await watcher.start();
  const hostile: Record<string, string> = {
    [`${H}/web/domain`]: 'good.example\nevil.example',
    [`${H}/web/url_reg`]: '^/a\n^/b',
    [`${H}/web/options`]: '{"healthPath":"/h\\n    http-request deny"}',
    [`${H}/web/upstreams/nl`]: '10.0.0.9:80\nset server b/s1 state maint',
    [`${H}/web/upstreams/semi`]: '10.0.0.9:80;set server b/s1 state maint',
    [`${H}/web/upstreams/hash`]: '10.0.0.9:80 # check disabled',
    [`${H}/web/upstreams/bs`]: '10.0.0.9:80\\',
    [`${H}/web/upstreams/nul`]: '10.0.0.9:80\0',
    [`${H}/web/upstreams/fullwidth`]: '１０.0.0.9:80',
    [`${H}/web/upstreams/big`]: '1'.repeat(100_000),
    [`${H}/web/upstreams/bad id!`]: '10.0.0.10:80',
    [`${H}/cyr/domain`]: 'ехаmple.com',
    [`${H}/bad name/upstreams/x`]: '10.0.0.11:80',
    [`${T}/t/ports`]: '80\n81',
  };
  const siblings: Record<string, string> = {
    [`${H}/web/upstreams/ok1`]: '10.0.0.1:80',
    [`${H}/web/upstreams/ok2`]: '[2001:db8::1]:80',
    [`${H}/web/sslpass`]: '0',
    [`${H}/cyr/upstreams/c1`]: '10.0.0.3:80',
    [`${T}/t/upstreams/t1`]: '10.0.0.4:9000',
  };
  // Invalid UTF-8 in a value (bytes, not a string).
  await client.put(`${H}/web/upstreams/latin1`).value(Buffer.from([0x31, 0x30, 0xff, 0x3a, 0x38, 0x30]));
  for (const [k, v] of Object.entries({ ...hostile, ...siblings })) await client.put(k).value(v);

  const wantRejected = [...Object.keys(hostile), `${H}/web/upstreams/latin1`].sort();
  // The last key written is the tcp sibling: once it is there, everything before it is too.
  await waitFor(() => tcp(watcher, 't')?.upstreams.size === 1, { timeoutMs: 5000, what: 'all applied' });
  assert.deepEqual(watcher.current!.rejections.map((r) => r.key).sort(), wantRejected);
  const web = http(watcher, 'web')!;
  assert.deepEqual([...web.upstreams.values()].map((u) => `${u.id}=${u.addr}:${u.port}`), ['ok1=10.0.0.1:80', 'ok2=2001:db8::1:80']);
  assert.deepEqual(web.domains, []);
  assert.equal(web.urlReg, null);
  assert.equal(web.options, DEFAULT_OPTIONS);
  assert.deepEqual(http(watcher, 'cyr')!.domains, []);
  assert.equal(http(watcher, 'cyr')!.upstreams.size, 1);
  assert.deepEqual(tcp(watcher, 't')!.ports, []);
  assert.equal(tcp(watcher, 't')!.upstreams.size, 1);
  assert.equal(watcher.current!.registry.http.has('bad name'), false);
  // Each rejection reported once to the metrics hook, although the registry was rebuilt many times.
  assert.equal(rejected.length, wantRejected.length);
  assert.equal(watcher.stats.rejections, wantRejected.length);
  // Fixing a value clears its rejection.
  await client.put(`${H}/web/upstreams/nl`).value('10.0.0.9:80');
  await waitFor(() => http(watcher, 'web')?.upstreams.has('nl') === true, { timeoutMs: 5000, what: 'fixed value applied' });
  assert.equal(watcher.current!.rejections.length, wantRejected.length - 1);
});

test('a burst of 1000 puts arrives as a few updates, nothing lost', async (t) => {
  const { client, watcher, updates } = await setup(t);
  await watcher.start();
  const N = 1000;
  const keys = Array.from({ length: N }, (_, i) => `${H}/burst/upstreams/u${String(i).padStart(4, '0')}`);
  const started = Date.now();
  let last = '0';
  for (let i = 0; i < N; i += 100) {
    const res = await Promise.all(keys.slice(i, i + 100).map((k, j) => client.put(k).value(`10.1.${Math.floor((i + j) / 250)}.${((i + j) % 250) + 1}:80`).exec()));
    for (const r of res) if (BigInt(r.header.revision) > BigInt(last)) last = r.header.revision;
  }
  const putMs = Date.now() - started;
  await waitFor(() => http(watcher, 'burst')?.upstreams.size === N, { timeoutMs: 10_000, what: `${N} upstreams` });
  await sleep(200); // let any trailing batch flush
  const changes = updates.filter((u) => u.cause === 'change');
  t.diagnostic(`${N} puts in ${putMs} ms → ${changes.length} updates (sizes ${changes.map((u) => u.changes).join(',')})`);
  // Leading edge: a change after a quiet coalesceMs goes at once, so puts that trickle in make
  // more updates; those arriving together are batched, and flushes are >= coalesceMs apart.
  assert.ok(changes.length < N / 2, `${changes.length} updates for ${N} puts`);
  assert.ok(changes.length <= putMs / 5 + 2, `${changes.length} updates in ${putMs} ms: at most one per 5 ms`);
  assert.equal(changes.reduce((s, u) => s + u.changes, 0), N, 'every event counted exactly once');
  assert.equal(watcher.stats.events, N);
  assert.equal(watcher.current!.registry.revision, last);
  assert.equal(watcher.current!.rejections.length, 0);
});

test('a steady stream of changes still flushes every maxBatchDelayMs', async (t) => {
  // coalesceMs far longer than the whole test: only maxBatchDelayMs can flush, however slow the machine.
  const { client, watcher, updates } = await setup(t, { coalesceMs: 60_000, maxBatchDelayMs: 100 });
  await watcher.start();
  const before = updates.length;
  const end = Date.now() + 1000;
  let i = 0;
  let firstUpdateWhileWriting = 0;
  while (Date.now() < end) {
    await client.put(`${H}/stream/upstreams/s${i}`).value(`10.2.${Math.floor(i / 250)}.${(i % 250) + 1}:80`);
    i++;
    if (!firstUpdateWhileWriting && updates.length > before) firstUpdateWhileWriting = i;
    await sleep(10);
  }
  // Well under coalesceMs: the last batch too is flushed by the max delay.
  await waitFor(() => http(watcher, 'stream')?.upstreams.size === i, { timeoutMs: 10_000, what: 'all stream puts' });
  const changes = updates.slice(before).filter((u) => u.cause === 'change');
  t.diagnostic(`${i} puts over 1 s → ${changes.length} updates; first update after put #${firstUpdateWhileWriting}`);
  assert.ok(firstUpdateWhileWriting > 0 && firstUpdateWhileWriting < i, `an update was emitted while the stream was still running (first after put #${firstUpdateWhileWriting} of ${i})`);
  assert.ok(changes.length >= 2, `${changes.length} updates`);
  assert.equal(changes.reduce((sum, u) => sum + u.changes, 0), i, 'every put counted exactly once');
});
