/**
 * Server commands against a real HAProxy 2.6.12: the slot life cycle with traffic, the
 * hold-until-healthy sequence, dynamic servers, and a burst of 1000 commands.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import * as E from '../../src/errors.js';
import * as R from '../../src/runtime/index.js';
import { freePort, haproxyTestConfig, removeDir, runLoad, startBackend, startHaproxy, waitFor, type HaproxyHandle } from '../../testkit/index.js';

async function setup(t: import('node:test').TestContext, backends = ['b1'], slots = 4) {
  const httpPort = await freePort();
  const hp: HaproxyHandle = await startHaproxy(haproxyTestConfig({ httpPort, backends, slots }));
  t.after(async () => {
    await hp.stop();
    await removeDir(hp.dir);
  });
  const client = new R.RuntimeClient({ path: hp.adminSocket });
  const mapPath = path.join(hp.dir, 'hosts.map');
  await client.run(R.addMap(mapPath, 'a.test', 'b1'));
  const url = `http://127.0.0.1:${httpPort}/`;
  const stat = async (srv: string) => {
    const row = R.parseStat(await client.run(R.showStat('b1', R.STAT_TYPE.SERVER))).find((r) => r.svname === srv);
    assert.ok(row, `no stat row for ${srv}`);
    return row;
  };
  const state = async (srv: string) => {
    const row = R.parseServersState(await client.run(R.showServersState('b1'))).find((r) => r.srvName === srv);
    assert.ok(row, `no state row for ${srv}`);
    return row;
  };
  return { hp, client, url, stat, state, mapPath };
}

const allOk = (results: R.BatchResult[]) => {
  const failed = results.filter((r) => !r.ok);
  assert.deepEqual(failed, [], 'every command succeeded');
};

test('slot life cycle: maint → addr/port → ready → serving → drain → scur 0 → maint → cleared', async (t) => {
  const { client, url, stat, state } = await setup(t);
  const slow = await startBackend('one', { delayMs: 1000 });
  const fast = await startBackend('two');
  t.after(() => Promise.all([slow.close(), fast.close()]));

  // A free slot: forced + config maintenance, no address.
  const free = await state('s1');
  assert.ok(R.isMaint(free));
  assert.deepEqual([free.srvAddr, free.srvPort], ['0.0.0.0', 1]);

  const take = await client.batch([R.setServerState('b1', 's1', 'maint'), R.setServerAddr('b1', 's1', '127.0.0.1', slow.port), R.setServerState('b1', 's1', 'ready')]);
  allOk(take);
  assert.equal(take[1]?.ok && take[1].reply.trim(), `IP changed from '0.0.0.0' to '127.0.0.1', port changed from '1' to '${slow.port}' by 'stats socket command'`);
  const taken = await state('s1');
  assert.equal(R.isMaint(taken), false);
  assert.deepEqual([taken.srvAddr, taken.srvPort, taken.srvAdminState], ['127.0.0.1', slow.port, R.SRV_ADMIN.CMAINT]);

  const served = await runLoad({ url, host: 'a.test', maxRequests: 4, concurrency: 4 });
  assert.deepEqual([served.failed, served.bodies.one], [0, 4], JSON.stringify(served.failures));

  // Three slow requests in flight on s1, then s2 takes over and s1 drains.
  const inflight = runLoad({ url, host: 'a.test', maxRequests: 3, concurrency: 3 });
  await waitFor(async () => (await stat('s1')).scur === 3, { timeoutMs: 3000, what: 's1 scur 3' });
  allOk(
    await client.batch([
      R.setServerState('b1', 's2', 'maint'),
      R.setServerAddr('b1', 's2', '127.0.0.1', fast.port),
      R.setServerState('b1', 's2', 'ready'),
      R.setServerState('b1', 's1', 'drain'),
    ]),
  );
  const draining = await stat('s1');
  assert.equal(draining.status, 'DRAIN');
  assert.equal(draining.scur, 3, 'in-flight requests stay on a draining server');
  assert.ok(R.isDrain(await state('s1')));
  const during = await runLoad({ url, host: 'a.test', maxRequests: 10, concurrency: 2 });
  assert.deepEqual([during.failed, during.bodies.two, during.bodies.one], [0, 10, undefined], 'new requests skip the draining slot');
  const finished = await inflight;
  assert.deepEqual([finished.failed, finished.bodies.one], [0, 3], 'in-flight requests finished with 200');
  await waitFor(
    async () => {
      const s = await stat('s1');
      return s.scur === 0 && s.qcur === 0;
    },
    { timeoutMs: 3000, what: 's1 idle' },
  );

  // Back to the pool: maint first, then clear the address (0.0.0.0 port 1, never port 0).
  allOk(await client.batch([R.setServerState('b1', 's1', 'maint'), R.setServerAddr('b1', 's1', '0.0.0.0', 1)]));
  const cleared = await state('s1');
  assert.ok(R.isMaint(cleared));
  assert.deepEqual([cleared.srvAddr, cleared.srvPort], ['0.0.0.0', 1]);
  assert.equal((await stat('s1')).status, 'MAINT');
  const after = await runLoad({ url, host: 'a.test', maxRequests: 10, concurrency: 2 });
  assert.deepEqual([after.failed, after.bodies.two], [0, 10]);
});

test('hold until healthy: maint; addr; drain; health down; ready — as separate commands in one batch', async (t) => {
  const { client, url, stat, state } = await setup(t);
  const be = await startBackend('three');
  const other = await startBackend('other');
  t.after(() => Promise.all([be.close(), other.close()]));
  allOk(await client.batch([R.setServerAddr('b1', 's1', '127.0.0.1', other.port), R.setServerState('b1', 's1', 'ready')]));

  const results = await client.batch([
    R.setServerState('b1', 's3', 'maint'),
    R.setServerAddr('b1', 's3', '127.0.0.1', be.port),
    R.setServerState('b1', 's3', 'drain'),
    R.setServerHealth('b1', 's3', 'down'),
    R.setServerState('b1', 's3', 'ready'),
  ]);
  allOk(results);
  assert.equal(results.length, 5);
  // Held down: not UP as it would be after a plain `ready` (notes pitfall 3).
  const held = await stat('s3');
  assert.match(held.status, /^DOWN/);
  assert.equal(R.isMaint(await state('s3')), false);
  const early = await runLoad({ url, host: 'a.test', maxRequests: 6, concurrency: 1 });
  assert.equal(early.failed, 0);
  assert.equal(early.bodies.three, undefined, 'no traffic before the checks pass');
  assert.equal(be.hits, 0);
  const seen = new Set<string>([held.status]);
  await waitFor(
    async () => {
      const s = await stat('s3');
      seen.add(s.status);
      return s.status === 'UP';
    },
    { timeoutMs: 8000, intervalMs: 50, what: 's3 UP after rise checks' },
  );
  t.diagnostic(`s3 statuses seen: ${[...seen].join(' → ')}`);
  const later = await runLoad({ url, host: 'a.test', maxRequests: 10, concurrency: 1 });
  assert.equal(later.failed, 0);
  assert.ok((later.bodies.three ?? 0) > 0, 'traffic once healthy');
});

test('dynamic servers: add server → enable health → ready → del server (with the refusals on the way)', async (t) => {
  const { client, url, stat, state } = await setup(t);
  const be = await startBackend('dyn');
  t.after(() => be.close());
  const add = R.addServer('b1', 'x1', { addr: '127.0.0.1', port: be.port, check: true, inter: 200, rise: 1, fall: 1, weight: 10, maxconn: 100 });
  assert.equal((await client.run(add)).trim(), 'New server registered.');
  await assert.rejects(client.run(add), E.ServerExistsError);
  const added = await state('x1');
  assert.ok(R.isMaint(added), 'new servers start in maintenance');
  assert.equal(added.srvUweight, 10);

  // Checks only run once enabled, and then even in maintenance.
  await client.run(R.enableHealth('b1', 'x1'));
  await waitFor(async () => (await stat('x1')).checkStatus === 'L4OK', { timeoutMs: 5000, what: 'x1 L4OK while in maint' });
  assert.equal((await stat('x1')).status, 'MAINT');

  await client.run(R.setServerState('b1', 'x1', 'ready'));
  const load = await runLoad({ url, host: 'a.test', maxRequests: 5, concurrency: 1 });
  assert.deepEqual([load.failed, load.bodies.dyn], [0, 5]);

  await assert.rejects(client.run(R.delServer('b1', 'x1')), E.ServerNotInMaintenanceError);
  await client.run(R.setServerState('b1', 'x1', 'maint'));
  await client.run(R.disableHealth('b1', 'x1'));
  // Idle connections to the server are purged by maint; retry while HAProxy says it is busy.
  const reply = await waitFor(
    async () => {
      try {
        return await client.run(R.delServer('b1', 'x1'));
      } catch (err) {
        if (err instanceof E.ServerBusyError) return '';
        throw err;
      }
    },
    { timeoutMs: 5000, what: 'del server' },
  );
  assert.equal(reply.trim(), 'Server deleted.');
  assert.deepEqual(
    R.parseServersState(await client.run(R.showServersState('b1'))).map((r) => r.srvName),
    ['s1', 's2', 's3', 's4'],
  );
  await assert.rejects(client.run(R.enableHealth('b1', 'x1')), E.NoSuchServerError);
});

test('burst: 1000 `set server weight` commands in batches of 200', async (t) => {
  const { client, state } = await setup(t, ['b1'], 20);
  const cmds = Array.from({ length: 1000 }, (_, i) => R.setServerWeight('b1', `s${(i % 20) + 1}`, (i * 7) % 257));
  const connectionsBefore = R.connectionCount();
  const t0 = performance.now();
  const results = await client.batch(cmds);
  const ms = performance.now() - t0;
  const connections = R.connectionCount() - connectionsBefore;
  t.diagnostic(`1000 set server weight: ${ms.toFixed(0)} ms over ${connections} connections`);
  console.log(`burst: 1000 commands in ${ms.toFixed(0)} ms over ${connections} connections`);
  assert.equal(results.length, 1000);
  allOk(results);
  assert.equal(connections, 5);
  // The last command per slot wins.
  for (let s = 1; s <= 20; s++) {
    const last = 980 + s - 1;
    assert.equal((await state(`s${s}`)).srvUweight, (last * 7) % 257, `s${s}`);
  }
});
