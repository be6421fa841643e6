import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { startEtcd, startHaproxy, haproxyTestConfig, freePort, socketCommand, startBackend, runLoad, removeDir } from '../../testkit/index.js';

test('harness starts a real etcd and stops it by PID', async (t) => {
  const etcd = await startEtcd();
  t.after(() => etcd.destroy());
  await etcd.ctl('put', '/k', 'v');
  assert.equal((await etcd.ctl('get', '/k', '--print-value-only')).trim(), 'v');
  await etcd.kill();
  assert.notEqual(etcd.proc.child.signalCode, null);
  await etcd.start();
  assert.equal((await etcd.ctl('get', '/k', '--print-value-only')).trim(), 'v', 'data kept across restart');
});

test('harness starts a real HAProxy in master-worker mode and routes to a backend', async (t) => {
  const httpPort = await freePort();
  const hp = await startHaproxy(haproxyTestConfig({ httpPort, backends: ['b1'] }));
  t.after(async () => {
    await hp.stop();
    await removeDir(hp.dir);
  });
  const be = await startBackend('one');
  t.after(() => be.close());
  assert.match(await socketCommand(hp.masterSocket, 'show proc'), /master/);
  const r = await runLoad({ url: `http://127.0.0.1:${httpPort}/`, host: 'a.test', maxRequests: 5, okStatus: (s) => s === 503 });
  assert.equal(r.ok, 5, 'unrouted host gets the no-route 503');
  const mapPath = path.join(hp.dir, 'hosts.map');
  assert.equal((await socketCommand(hp.adminSocket, `add map ${mapPath} a.test b1`)).trim(), '');
  await socketCommand(hp.adminSocket, `set server b1/s1 addr 127.0.0.1 port ${be.port}`);
  await socketCommand(hp.adminSocket, 'set server b1/s1 state ready');
  const r2 = await runLoad({ url: `http://127.0.0.1:${httpPort}/`, host: 'a.test', maxRequests: 20 });
  assert.equal(r2.failed, 0, JSON.stringify(r2.failures));
  assert.equal(r2.bodies.one, 20);
});
