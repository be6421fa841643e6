/**
 * RegistryWatcher when etcd goes away and comes back, and when etcd compacts past the
 * revision the watch starts from: the last good registry stays (reported stale, never
 * empty), and a full resync reflects everything, including deletes.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Etcd3 } from 'etcd3';
import { startEtcd, waitFor, sleep, freePort } from '../../testkit/index.js';
import { RegistryWatcher, type RegistryUpdate, type WatchState } from '../../src/watch/index.js';

const P = '/haproxy-discover';
const H = `${P}/http-services`;

const upstreamIds = (u: { registry: RegistryUpdate['registry'] } | null, svc: string) => [...(u?.registry.http.get(svc)?.upstreams.keys() ?? [])];

test('etcd killed and restarted: stale but unchanged during the outage, full resync after (deletes included)', async (t) => {
  const etcd = await startEtcd();
  t.after(() => etcd.destroy());
  await etcd.ctl('put', `${H}/web/domain`, 'web.example');
  await etcd.ctl('put', `${H}/web/upstreams/a`, '10.0.0.1:80');
  await etcd.ctl('put', `${H}/web/upstreams/b`, '10.0.0.2:80');
  await etcd.ctl('put', `${H}/gone/upstreams/g`, '10.0.0.3:80');

  const watcher = new RegistryWatcher({ endpoints: [etcd.endpoint], prefix: P, backoff: { initialMs: 100, maxMs: 500 } });
  t.after(() => watcher.stop());
  const updates: RegistryUpdate[] = [];
  const states: WatchState[] = [];
  watcher.onUpdate((u) => updates.push(u));
  watcher.onStateChange((s) => states.push(s));
  await watcher.start();
  const before = watcher.current!.registry;

  await etcd.kill();
  await waitFor(() => watcher.stale, { timeoutMs: 10_000, what: 'stale after kill' });
  assert.equal(watcher.state, 'disconnected');
  // Stay down for several retry rounds.
  await sleep(1500);
  const outage = updates.slice(1);
  assert.equal(outage.length, 1, `one update during the outage, got ${outage.map((u) => u.cause).join()}`);
  assert.equal(outage[0]!.cause, 'stale');
  assert.equal(outage[0]!.stale, true);
  assert.deepEqual(upstreamIds(outage[0]!, 'web'), ['a', 'b'], 'stale update carries the last good registry');
  assert.equal(outage[0]!.registry.http.size, 2, 'never an empty registry');
  assert.equal(watcher.current!.registry.http.get('web'), before.http.get('web'), 'registry unchanged during the outage');
  assert.ok(states.filter((s) => s === 'connecting').length >= 3, `retried: ${states.join(' ')}`);
  assert.equal(watcher.stats.disconnects, 1);

  // Restart, and change things through a second client straight away (the watcher is
  // still backing off): a delete of a key, a delete of a whole service, a put.
  await etcd.start();
  const other = new Etcd3({ hosts: etcd.endpoint });
  t.after(() => other.close());
  await other.delete().key(`${H}/web/upstreams/a`);
  await other.delete().prefix(`${H}/gone/`);
  await other.put(`${H}/web/upstreams/c`).value('10.0.0.4:80');

  await waitFor(() => watcher.state === 'watching' && !watcher.stale, { timeoutMs: 10_000, what: 'resynced' });
  await waitFor(() => upstreamIds(watcher.current, 'web').join() === 'b,c', { timeoutMs: 5000, what: 'changes after restart reflected' });
  assert.equal(watcher.current!.registry.http.has('gone'), false, 'service deleted during the gap is gone');
  assert.equal(watcher.stats.resyncs, 1);
  const resync = updates.find((u) => u.cause === 'resync')!;
  assert.equal(resync.stale, false);
  assert.ok(updates.every((u) => u.registry.http.size > 0), 'no update ever carried an empty registry');

  // And the new watch works.
  await other.put(`${H}/web/upstreams/d`).value('10.0.0.5:80');
  await waitFor(() => upstreamIds(watcher.current, 'web').includes('d'), { timeoutMs: 5000, what: 'watch after resync' });
});

test('start() keeps retrying while etcd is down and resolves once it is up', async (t) => {
  const etcd = await startEtcd();
  t.after(() => etcd.destroy());
  await etcd.ctl('put', `${H}/web/upstreams/a`, '10.0.0.1:80');
  await etcd.kill();
  const watcher = new RegistryWatcher({ endpoints: [etcd.endpoint], prefix: P, backoff: { initialMs: 100, maxMs: 300 } });
  t.after(() => watcher.stop());
  const updates: RegistryUpdate[] = [];
  watcher.onUpdate((u) => updates.push(u));
  let resolved = false;
  const started = watcher.start().then(() => (resolved = true));
  await sleep(1000);
  assert.equal(resolved, false);
  assert.equal(watcher.current, null);
  assert.equal(updates.length, 0, 'no update (in particular no empty registry) before the first load');
  assert.ok(['connecting', 'loading', 'disconnected'].includes(watcher.state), watcher.state);
  await etcd.start();
  await started;
  assert.equal(updates.length, 1);
  assert.equal(updates[0]!.cause, 'initial');
  assert.deepEqual(upstreamIds(watcher.current, 'web'), ['a']);
});

test('stop() before the first load rejects start()', async (t) => {
  const etcd = await startEtcd();
  t.after(() => etcd.destroy());
  await etcd.kill();
  const watcher = new RegistryWatcher({ endpoints: [etcd.endpoint], prefix: P });
  const started = watcher.start();
  await sleep(200);
  await watcher.stop();
  await assert.rejects(started, { code: 'E_ETCD_UNAVAILABLE' });
  assert.equal(watcher.state, 'stopped');
});

test('a watch cancelled by compaction triggers a full resync', async (t) => {
  const etcd = await startEtcd();
  t.after(() => etcd.destroy());
  const other = new Etcd3({ hosts: etcd.endpoint });
  t.after(() => other.close());
  await other.put(`${H}/web/upstreams/a`).value('10.0.0.1:80');
  await other.put(`${H}/web/upstreams/b`).value('10.0.0.2:80');

  // Lag: between the watcher's range (at revision R) and its watch from R+1, another
  // client changes the registry and compacts past R+1. etcd then cancels the new watch
  // with compact_revision set — the real cancel path, as when a slow watcher falls behind.
  let lagged = false;
  const watcher = new RegistryWatcher({
    endpoints: [etcd.endpoint],
    prefix: P,
    hooks: {
      afterLoad: async (revision) => {
        if (lagged) return;
        lagged = true;
        await other.delete().key(`${H}/web/upstreams/a`);
        await other.put(`${H}/web/upstreams/c`).value('10.0.0.3:80');
        const { header } = await other.put('/unrelated').value('x').exec();
        assert.ok(BigInt(header.revision) > BigInt(revision) + 1n);
        await etcd.ctl('compact', header.revision);
      },
    },
  });
  t.after(() => watcher.stop());
  const updates: RegistryUpdate[] = [];
  watcher.onUpdate((u) => updates.push(u));
  await watcher.start();
  await waitFor(() => watcher.stats.resyncs === 1 && watcher.state === 'watching', { timeoutMs: 10_000, what: 'resync after compaction' });
  assert.equal(watcher.stats.compactions, 1);
  assert.equal(watcher.stats.disconnects, 0, 'a compaction is not an outage');
  assert.deepEqual(upstreamIds(watcher.current, 'web'), ['b', 'c'], 'changes made before the compaction are reflected');
  assert.ok(updates.every((u) => !u.stale));
  assert.equal(updates.at(-1)!.cause, 'resync');

  // The watch from the resync revision delivers changes again.
  await other.put(`${H}/web/upstreams/d`).value('10.0.0.4:80');
  await waitFor(() => upstreamIds(watcher.current, 'web').includes('d'), { timeoutMs: 5000, what: 'watch after compaction resync' });
});

test('several endpoints, one of them dead: the watcher loads and watches through the live one', async (t) => {
  const etcd = await startEtcd();
  t.after(() => etcd.destroy());
  await etcd.ctl('put', `${H}/web/upstreams/a`, '10.0.0.1:80');
  const dead = `http://127.0.0.1:${await freePort()}`;
  for (const endpoints of [[dead, etcd.endpoint], [etcd.endpoint, dead]]) {
    const watcher = new RegistryWatcher({ endpoints, prefix: P, backoff: { initialMs: 100, maxMs: 500 } });
    const t0 = Date.now();
    await watcher.start();
    const ms = Date.now() - t0;
    t.diagnostic(`${endpoints.join(',')}: first load after ${ms} ms`);
    assert.ok(ms < 5000, `${ms} ms`);
    await etcd.ctl('put', `${H}/web/upstreams/b`, '10.0.0.2:80');
    await waitFor(() => upstreamIds(watcher.current, 'web').includes('b'), { timeoutMs: 5000, what: 'change via the live endpoint' });
    await etcd.ctl('del', `${H}/web/upstreams/b`);
    await waitFor(() => !upstreamIds(watcher.current, 'web').includes('b'), { timeoutMs: 5000, what: 'delete via the live endpoint' });
    await watcher.stop();
  }
});
