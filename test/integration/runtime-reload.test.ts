/**
 * Master CLI against the real HAProxy under test (haproxyBin(): 2.6 to 3.4) in master-worker
 * mode, with the capabilities its `show info` version maps to: a reload verified by a new
 * worker PID (under traffic), and an invalid config detected as `ReloadFailedError` while
 * the old worker keeps serving (listed under `# workers` on 2.6/3.0, `# old workers` on 3.2+).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { appendFile, readFile, writeFile } from 'node:fs/promises';
import * as E from '../../src/errors.js';
import * as R from '../../src/runtime/index.js';
import { NoGuard, Reloader } from '../../src/reload/index.js';
import { haproxyBin, freePort, haproxyTestConfig, httpRequest, removeDir, runLoad, startBackend, startHaproxy, waitFor } from '../../testkit/index.js';

/** HAProxy under test with a runtime and a master client that use its version's capabilities. */
async function startWithClients(t: { after(fn: () => Promise<void>): void; diagnostic(msg: string): void }) {
  const httpPort = await freePort();
  const hp = await startHaproxy(haproxyTestConfig({ httpPort, backends: ['b1'] }));
  t.after(async () => {
    await hp.stop();
    await removeDir(hp.dir);
  });
  const client = new R.RuntimeClient({ path: hp.adminSocket });
  const master = new R.MasterClient({ path: hp.masterSocket });
  const running = R.capabilitiesFor(R.summarizeInfo(R.parseInfo(await client.run(R.showInfo()))).version);
  assert.ok(running.branch, `the capability table knows the HAProxy under test (${running.version?.raw})`);
  master.useCapabilities(running.capabilities);
  t.diagnostic(`haproxy ${running.version?.raw}: ${running.label}`);
  return { httpPort, hp, client, master, running };
}

test('reload: success (new worker, traffic uninterrupted, slot kept via the state file); invalid config → ReloadFailedError, old worker serving', async (t) => {
  const { httpPort, hp, client, master, running } = await startWithClients(t);
  const be = await startBackend('one');
  t.after(() => be.close());
  const results = await client.batch([
    R.addMap(path.join(hp.dir, 'hosts.map'), 'a.test', 'b1'),
    R.setServerAddr('b1', 's1', '127.0.0.1', be.port),
    R.setServerState('b1', 's1', 'ready'),
  ]);
  assert.ok(results.every((r) => r.ok));
  const url = `http://127.0.0.1:${httpPort}/`;

  const before = await master.showProc();
  assert.equal(before.masterPid, hp.pid);
  assert.equal(before.workers.length, 1);
  const oldWorker = before.workers[0]!.pid;

  // Map entries added at runtime are not in the file: write it, as the daemon would.
  await writeFile(path.join(hp.dir, 'hosts.map'), 'a.test b1\n');
  // Keep the slot's address across the reload: dump the state where `server-state-file` points.
  await writeFile(path.join(hp.dir, 'server-state'), await client.run(R.showServersState()));

  // Proof of overlap, not a sleep: a slow request the old worker is answering when the reload
  // starts must finish after the reload is confirmed, and the load runs from before the reload
  // until the upstream has served more requests after it.
  const stopLoad = new AbortController();
  const load = runLoad({ url, host: 'a.test', durationMs: 20_000, concurrency: 2, signal: stopLoad.signal });
  const slow = httpRequest({ port: httpPort, host: 'a.test', path: '/slow?ms=3000', timeoutMs: 15_000 }).then((r) => ({ ...r, at: Date.now() }));
  await waitFor(() => be.inflight >= 1 && be.hits >= 5, { timeoutMs: 10_000, what: 'the slow request and some load at the upstream before the reload' });
  const reloadStartedAt = Date.now();
  const ok = await master.reload();
  const reloadConfirmedAt = Date.now();
  t.diagnostic(`reload confirmed in ${ok.durationMs} ms: worker ${ok.previousWorkerPid} → ${ok.workerPid}`);
  assert.equal(ok.reloadsBefore, before.reloads);
  assert.equal(ok.reloadsAfter, before.reloads + 1);
  assert.equal(ok.previousWorkerPid, oldWorker);
  assert.notEqual(ok.workerPid, oldWorker);
  const hitsAtConfirm = be.hits;
  await waitFor(() => be.hits >= hitsAtConfirm + 10, { timeoutMs: 10_000, what: '10 more requests served after the reload' });
  stopLoad.abort();
  const during = await load;
  assert.equal(during.failed, 0, JSON.stringify(during.failures));
  const slowDone = await slow;
  assert.deepEqual([slowDone.status, slowDone.body], [200, 'one'], `slow request across the reload: ${slowDone.error ?? slowDone.status}`);
  assert.ok(slowDone.at > reloadConfirmedAt, `the slow request (started before the reload at ${reloadStartedAt}) finished at ${slowDone.at}, after the confirmation at ${reloadConfirmedAt}`);

  // A new connection reaches the new worker.
  const info = R.summarizeInfo(R.parseInfo(await client.run(R.showInfo())));
  assert.equal(info.pid, ok.workerPid);
  assert.equal(info.stopping, false);
  const slot = R.parseServersState(await client.run(R.showServersState('b1'))).find((r) => r.srvName === 's1');
  assert.deepEqual([slot?.srvAddr, slot?.srvPort, slot && R.isMaint(slot)], ['127.0.0.1', be.port, false]);

  // An invalid config: the master reports the failure, the worker from the good reload stays.
  const good = await readFile(hp.cfgPath, 'utf8');
  await appendFile(hp.cfgPath, '\n    bogus-keyword\n');
  const err = await master.reload().then(
    () => assert.fail('reload of an invalid config reported success'),
    (e: unknown) => e,
  );
  assert.ok(err instanceof E.ReloadFailedError, String(err));
  assert.equal(err.context.reloads, ok.reloadsAfter + 1);
  assert.equal(err.context.failed, 1);
  assert.equal(err.recoverable, false);
  // 2.8+ says why in its reply: the ALERT naming the bad line becomes the message.
  if (running.capabilities.syncReload) assert.match(err.message, /unknown keyword 'bogus-keyword'/);
  const failedProc = await master.showProc();
  assert.deepEqual(R.servingWorkers(failedProc).map((w) => w.pid), [ok.workerPid], 'old worker kept');
  const still = await runLoad({ url, host: 'a.test', maxRequests: 20, concurrency: 2 });
  assert.deepEqual([still.failed, still.bodies.one], [0, 20], JSON.stringify(still.failures));
  assert.equal(R.summarizeInfo(R.parseInfo(await client.run(R.showInfo()))).pid, ok.workerPid);

  // Fixed config: the next reload succeeds and `failed` is back to 0.
  await writeFile(hp.cfgPath, good);
  const again = await master.reload();
  assert.notEqual(again.workerPid, ok.workerPid);
  assert.equal((await master.showProc()).failed, 0);
});

test('reload against a master socket that is not there: typed, recoverable errors', async () => {
  const master = new R.MasterClient({ path: '/nonexistent/master.sock' }, { timeoutMs: 300 });
  await assert.rejects(master.showProc(), (e: unknown) => e instanceof E.RuntimeConnectionError && e.recoverable);
  await assert.rejects(master.reload({ timeoutMs: 500 }), (e: unknown) => e instanceof E.RuntimeConnectionError);
});

test('external mode, validator skew: a sync-reload HAProxy validates the config itself (refused → rolled back, ConfigInvalidError); otherwise the local haproxy -c refuses first', async (t) => {
  const { httpPort, hp, client, master, running } = await startWithClients(t);
  // The updater's own binary is another version than the running one (a sidecar image's).
  const local = R.localCheckFirst('external', running, '0.0.0-other');
  assert.equal(local, !running.capabilities.syncReload);
  const reloader = new Reloader({
    master,
    runtime: client,
    guard: new NoGuard(),
    cfgPath: hp.cfgPath,
    serverStateFile: path.join(hp.dir, 'server-state'),
    guardPorts: () => [httpPort],
    haproxyBin: haproxyBin(),
    probeNewPorts: false,
    validateLocally: () => local,
  });
  const good = await readFile(hp.cfgPath, 'utf8');
  const before = await master.showProc();
  const err = await reloader.reload({ config: `${good}\n    bogus-keyword\n`, files: new Map() }, ['test']).then(
    () => assert.fail('a config with an unknown keyword was reported as running'),
    (e: unknown) => e,
  );
  assert.ok(err instanceof E.ConfigInvalidError, String(err));
  assert.match(err.message, /bogus-keyword/);
  assert.equal(await readFile(hp.cfgPath, 'utf8'), good, 'the running config is back on disk');
  const after = await master.showProc();
  if (local) {
    // Local haproxy -c refused it: HAProxy was never asked.
    assert.equal(err.context.validatedBy, undefined);
    assert.equal(after.reloads, before.reloads);
  } else {
    // The running HAProxy refused it (keeping its worker), then the rollback reload succeeded.
    assert.equal(err.context.validatedBy, 'running haproxy');
    assert.equal(after.reloads, before.reloads + 2);
    assert.equal(after.failed, 0);
  }
  assert.equal(R.servingWorkers(after).length, 1);
});
