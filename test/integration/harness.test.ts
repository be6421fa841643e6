import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { readFile, writeFile } from 'node:fs/promises';
import {
  etcdBin,
  freePort,
  haproxyBin,
  haproxyTestConfig,
  killHaproxy,
  masterView,
  removeDir,
  runLoad,
  socketCommand,
  startBackend,
  startEtcd,
  startHaproxy,
  startUpdater,
  tempDir,
} from '../../testkit/index.js';

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

test('executables come from HAPROXY_BIN and ETCD_BIN (tests, and the updater testkit starts), or fail naming the variable', async (t) => {
  const saved = { haproxy: process.env.HAPROXY_BIN, etcd: process.env.ETCD_BIN };
  const dir = await tempDir('hu-bins-');
  t.after(async () => {
    for (const [name, v] of [['HAPROXY_BIN', saved.haproxy], ['ETCD_BIN', saved.etcd]] as const) {
      if (v === undefined) delete process.env[name];
      else process.env[name] = v;
    }
    await removeDir(dir);
  });
  // Wrappers that log their arguments, then become the real executables (same PID).
  const calls = path.join(dir, 'calls');
  const wrapper = async (name: string, real: string) => {
    const file = path.join(dir, name);
    await writeFile(file, `#!/bin/sh\necho "${name} $*" >> "${calls}"\nexec "${real}" "$@"\n`, { mode: 0o755 });
    return file;
  };
  const realHaproxy = haproxyBin();
  const realEtcd = etcdBin();

  process.env.HAPROXY_BIN = path.join(dir, 'missing-haproxy');
  await assert.rejects(startHaproxy(haproxyTestConfig({ httpPort: await freePort(), backends: ['b1'] })), /^Error: HAPROXY_BIN: '.*missing-haproxy' is not an executable file$/);
  process.env.HAPROXY_BIN = 'no-such-haproxy-anywhere';
  assert.throws(() => haproxyBin(), /^Error: HAPROXY_BIN: no executable 'no-such-haproxy-anywhere' on PATH/);

  process.env.HAPROXY_BIN = await wrapper('hp-wrapper', realHaproxy);
  process.env.ETCD_BIN = await wrapper('etcd-wrapper', realEtcd);
  const etcd = await startEtcd();
  t.after(() => etcd.destroy());
  const stateDir = await tempDir('hu-bins-state-');
  t.after(() => removeDir(stateDir));
  const u = await startUpdater({ etcdEndpoint: etcd.endpoint, stateDir });
  t.after(async () => {
    await u.stop();
    await killHaproxy(u.masterSocket);
  });
  const logged = await readFile(calls, 'utf8');
  assert.match(logged, /^etcd-wrapper --name test /m, 'etcd started through ETCD_BIN');
  assert.match(logged, /^hp-wrapper .*-W .*-f \S+haproxy\.cfg/m, 'the updater started its managed HAProxy through HAPROXY_BIN (--haproxy-bin)');
  assert.ok((await masterView(u.masterSocket)).workers.length > 0, 'and it runs');
});
