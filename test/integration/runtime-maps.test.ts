/**
 * Map, info, backend and stat families against a real HAProxy 2.6.12, with routing
 * checked by traffic.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import * as E from '../../src/errors.js';
import * as R from '../../src/runtime/index.js';
import { freePort, haproxyTestConfig, removeDir, runLoad, startBackend, startHaproxy, socketCommand } from '../../testkit/index.js';

async function setup(t: import('node:test').TestContext) {
  const httpPort = await freePort();
  const hp = await startHaproxy(haproxyTestConfig({ httpPort, backends: ['b1', 'b2'] }));
  t.after(async () => {
    await hp.stop();
    await removeDir(hp.dir);
  });
  const one = await startBackend('one');
  const two = await startBackend('two');
  t.after(() => Promise.all([one.close(), two.close()]));
  const client = new R.RuntimeClient({ path: hp.adminSocket });
  const results = await client.batch([
    R.setServerAddr('b1', 's1', '127.0.0.1', one.port),
    R.setServerState('b1', 's1', 'ready'),
    R.setServerAddr('b2', 's1', '127.0.0.1', two.port),
    R.setServerState('b2', 's1', 'ready'),
  ]);
  assert.ok(results.every((r) => r.ok));
  const url = `http://127.0.0.1:${httpPort}/`;
  /** Body of one request for `host` ('no route' = the default 503 backend). */
  const route = async (host: string) => {
    const r = await runLoad({ url, host, maxRequests: 1, concurrency: 1, okStatus: () => true });
    return Object.keys(r.bodies)[0];
  };
  return { hp, client, route, mapPath: path.join(hp.dir, 'hosts.map') };
}

test('maps: add / set / del route traffic at once; refusals are typed', async (t) => {
  const { client, route, mapPath } = await setup(t);
  const [map] = R.parseMapList(await client.run(R.showMaps()));
  assert.deepEqual([map?.file, map?.entryCount, map?.currVer], [mapPath, 0, 0]);
  assert.equal(await route('new.test'), 'no route');

  await client.run(R.addMap(mapPath, 'new.test', 'b1'));
  assert.equal(await route('new.test'), 'one');
  assert.equal(await route('NEW.Test'), 'one', 'the frontend lowercases the host');
  await client.run(R.setMap(mapPath, 'new.test', 'b2'));
  assert.equal(await route('new.test'), 'two');
  assert.deepEqual(R.parseMapEntries(await client.run(R.showMap(mapPath))), [{ key: 'new.test', value: 'b2' }]);
  await client.run(R.delMap(mapPath, 'new.test'));
  assert.equal(await route('new.test'), 'no route');

  await assert.rejects(client.run(R.delMap(mapPath, 'new.test')), E.MapEntryNotFoundError);
  await assert.rejects(client.run(R.setMap(mapPath, 'new.test', 'b1')), E.MapEntryNotFoundError);
  await assert.rejects(client.run(R.showMap(path.join(path.dirname(mapPath), 'other.map'))), E.NoSuchMapError);
  await assert.rejects(client.run(R.commitMap(99, mapPath)), E.MapVersionError);
});

test('maps: replaceMap swaps the whole content atomically (prepare → payload → commit), large maps in chunks', async (t) => {
  const { client, route, mapPath } = await setup(t);
  await client.run(R.addMap(mapPath, 'old.test', 'b1'));
  const out = await R.replaceMap(client, mapPath, [
    { key: 'a.test', value: 'b1' },
    { key: 'b.test', value: 'b2' },
  ]);
  assert.equal(out.entries, 2);
  assert.deepEqual(
    R.parseMapEntries(await client.run(R.showMap(mapPath))),
    [
      { key: 'a.test', value: 'b1' },
      { key: 'b.test', value: 'b2' },
    ],
  );
  const [info] = R.parseMapList(await client.run(R.showMaps()));
  assert.equal(info?.currVer, out.version);
  assert.deepEqual([await route('a.test'), await route('b.test'), await route('old.test')], ['one', 'two', 'no route']);

  // 3000 entries (~75 kB) would overflow HAProxy's 16 kB payload buffer in one command.
  const many = Array.from({ length: 3000 }, (_, i) => ({ key: `host${i}.example.test`, value: i % 2 ? 'b2' : 'b1' }));
  assert.ok(R.addMapPayloadChunks(1, mapPath, many).length > 5);
  const big = await R.replaceMap(client, mapPath, many);
  assert.ok(big.version > out.version);
  assert.equal(R.parseMapEntries(await client.run(R.showMap(mapPath))).length, 3000);
  assert.deepEqual([await route('host2999.example.test'), await route('host1000.example.test'), await route('a.test')], ['two', 'one', 'no route']);

  // Empty replacement clears the map.
  await R.replaceMap(client, mapPath, []);
  assert.deepEqual(R.parseMapEntries(await client.run(R.showMap(mapPath))), []);
});

test('info, backend, stat and servers-state families', async (t) => {
  const { hp, client } = await setup(t);
  const [info, backends, stat, state] = await client.batch([R.showInfo(), R.showBackend(), R.showStat(), R.showServersState()]);
  assert.ok(info?.ok && backends?.ok && stat?.ok && state?.ok);
  const summary = R.summarizeInfo(R.parseInfo(info.reply));
  const proc = R.parseShowProc(await socketCommand(hp.masterSocket, 'show proc'));
  assert.equal(summary.pid, proc.workers[0]?.pid, 'show info answers from the current worker');
  assert.equal(summary.stopping, false);
  assert.deepEqual(R.parseBackendList(backends.reply), ['no-route', 'b1', 'b2']);
  const rows = R.parseStat(stat.reply);
  assert.deepEqual(
    rows.filter((r) => r.pxname === 'b1').map((r) => [r.svname, r.status.split(' ')[0]]),
    [['s1', 'UP'], ['s2', 'MAINT'], ['s3', 'MAINT'], ['s4', 'MAINT'], ['BACKEND', 'UP']],
  );
  assert.equal(R.parseServersState(state.reply).length, 8);
  await assert.rejects(client.run(R.showStat('nope')), E.NoSuchBackendError);
  await assert.rejects(client.run(R.showServersState('nope')), E.NoSuchBackendError);
  await assert.rejects(client.run(R.setServerWeight('b1', 'nope', 1)), E.NoSuchServerError);
});
