/**
 * The capability table and the version-dependent replies, on real replies captured from
 * Debian's HAProxy 2.6.12, 3.0.11, 3.2.26 and 3.4.7 (test/fixtures/runtime/versions/<branch>/).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import * as R from '../../src/runtime/index.js';

const fixture = (branch: string, name: string) =>
  readFileSync(new URL(`../fixtures/runtime/versions/${branch}/${name}.txt`, import.meta.url), 'utf8');

const EXPECTED: Record<string, { raw: string; label: string }> = {
  '2.6': { raw: '2.6.12-1+deb12u4', label: 'max-reloads-unlimited' },
  '3.0': { raw: '3.0.11-1+deb13u4', label: 'sync-reload,wait-srv-removable,max-reloads-unlimited' },
  '3.2': { raw: '3.2.26-1', label: 'sync-reload,wait-srv-removable,max-reloads-unlimited' },
  '3.4': { raw: '3.4.7-1', label: 'sync-reload,wait-srv-removable,dynamic-backends,max-reloads-50' },
};

for (const [branch, want] of Object.entries(EXPECTED)) {
  test(`${branch}: show info version → table row and capabilities`, () => {
    const info = R.summarizeInfo(R.parseInfo(fixture(branch, 'show-info')));
    assert.equal(info.version, want.raw);
    const vc = R.capabilitiesFor(info.version);
    assert.equal(vc.branch, branch);
    assert.equal(vc.label, want.label);
    assert.equal(vc.version?.raw, want.raw);
  });

  test(`${branch}: show proc before/after a reload and after a refused one; the serving worker is found`, () => {
    const start = R.parseShowProc(fixture(branch, 'show-proc-start'));
    const after = R.parseShowProc(fixture(branch, 'show-proc-after-reload'));
    const refused = R.parseShowProc(fixture(branch, 'show-proc-after-refused'));
    assert.deepEqual([start.reloads, start.failed, after.reloads, after.failed, refused.reloads, refused.failed], [0, 0, 1, 0, 2, 1]);
    const newWorker = R.servingWorkers(after)[0]!.pid;
    assert.notEqual(newWorker, R.servingWorkers(start)[0]!.pid);
    // After the refused reload, the worker of the good reload is the one serving, wherever listed.
    assert.deepEqual(R.servingWorkers(refused).map((w) => w.pid), [newWorker]);
    assert.equal(refused.version, want.raw);
  });

  test(`${branch}: the master's reload reply`, () => {
    const ok = R.parseReloadReply(fixture(branch, 'reload-ok'));
    const refused = R.parseReloadReply(fixture(branch, 'reload-refused'));
    if (!R.capabilitiesFor(want.raw).capabilities.syncReload) {
      // 2.6 answers nothing: the verdict can only come from `show proc`.
      assert.deepEqual([ok, refused], [null, null]);
      return;
    }
    assert.equal(ok?.success, true);
    assert.deepEqual(ok?.alerts, []);
    assert.equal(refused?.success, false);
    assert.match(refused?.alerts[0] ?? '', /^config : parsing \[.*h\.cfg:14\] : unknown keyword 'bogus-keyword' in 'frontend' section$/);
    assert.equal(refused?.alerts.length, 3);
  });
}

test('3.2 and 3.4 list the kept worker under "# old workers" with "# workers" empty', () => {
  for (const branch of ['3.2', '3.4']) {
    const p = R.parseShowProc(fixture(branch, 'show-proc-after-refused'));
    assert.deepEqual([p.workers.length, p.oldWorkers.length], [0, 1], branch);
  }
  // An old generation still finishing connections is not the serving one.
  const p = R.parseShowProc(fixture('3.4', 'show-proc-after-refused'));
  const older = { ...p.oldWorkers[0]!, pid: 1, reloads: 3 };
  assert.deepEqual(R.servingWorkers({ workers: [], oldWorkers: [older, ...p.oldWorkers] }).map((w) => w.pid), [p.oldWorkers[0]!.pid]);
});

test('version parser', () => {
  assert.deepEqual(R.parseHaproxyVersion('3.0.11-1+deb13u4'), { major: 3, minor: 0, patch: 11, raw: '3.0.11-1+deb13u4' });
  assert.deepEqual(R.parseHaproxyVersion('3.3-dev5-1a2b3c'), { major: 3, minor: 3, patch: null, raw: '3.3-dev5-1a2b3c' });
  assert.deepEqual(R.parseHaproxyVersion(' 2.6.12 '), { major: 2, minor: 6, patch: 12, raw: '2.6.12' });
  for (const bad of ['', 'HAProxy', 'v3.0.1', '3', '3.0.1.2.3x', '30000.1']) assert.equal(R.parseHaproxyVersion(bad), null, bad);
  assert.equal(R.versionFromHaproxyV('HAProxy version 3.2.26-1 2026/10/14 - https://haproxy.org/\nStatus: ...'), '3.2.26-1');
  assert.equal(R.versionFromHaproxyV('HA-Proxy version 2.6.12-1+deb12u4 2026/10/17 - https://haproxy.org/'), '2.6.12-1+deb12u4');
  assert.equal(R.versionFromHaproxyV('not haproxy'), null);
});

test('unknown or unparsable versions get the most conservative capabilities, never a throw', () => {
  for (const v of ['3.5.0', '3.3.1', '2.4.22', '9.9-dev0', 'garbage', '', null, undefined]) {
    const vc = R.capabilitiesFor(v);
    assert.equal(vc.branch, null, String(v));
    assert.deepEqual(vc.capabilities, R.CONSERVATIVE);
    assert.equal(vc.capabilities.syncReload || vc.capabilities.waitSrvRemovable || vc.capabilities.dynamicBackends, false);
  }
  assert.equal(R.capabilitiesFor('2.8.5').capabilities.syncReload, true);
  assert.deepEqual(R.KNOWN_BRANCHES, ['2.6', '2.8', '3.0', '3.2', '3.4']);
});

test('localCheckFirst: the local haproxy -c runs unless an external sync-reload HAProxy of another version can validate', () => {
  const v34 = R.capabilitiesFor('3.4.7-1');
  const v26 = R.capabilitiesFor('2.6.12-1+deb12u4');
  assert.equal(R.localCheckFirst('managed', v34, '2.6.12-1+deb12u4'), true);
  assert.equal(R.localCheckFirst('external', v34, '3.4.7-1'), true);
  assert.equal(R.localCheckFirst('external', v34, '3.2.26-1'), false);
  assert.equal(R.localCheckFirst('external', v34, null), false);
  // 2.6 answers `reload` with nothing: only haproxy -c can tell why a config is bad.
  assert.equal(R.localCheckFirst('external', v26, '3.4.7-1'), true);
  assert.equal(R.localCheckFirst('external', R.capabilitiesFor('9.9.9'), null), true);
});

test('VersionTracker: reads show info, reports each new version once; an unknown one gets the conservative set', async () => {
  let reply = fixture('3.4', 'show-info');
  const seen: Array<string | null> = [];
  const tracker = new R.VersionTracker({ run: async () => reply }, { onChange: (now) => seen.push(now.branch) });
  assert.equal(tracker.current.branch, null, 'conservative before the first read');
  assert.deepEqual(tracker.current.capabilities, R.CONSERVATIVE);
  assert.equal((await tracker.refresh()).branch, '3.4');
  await tracker.refresh();
  reply = reply.replace('Version: 3.4.7-1', 'Version: 3.5.0-1');
  const unknown = await tracker.refresh();
  assert.deepEqual([unknown.branch, unknown.version?.raw], [null, '3.5.0-1']);
  assert.deepEqual(unknown.capabilities, R.CONSERVATIVE);
  assert.deepEqual(seen, ['3.4', null]);
  reply = 'not a show info reply';
  await assert.rejects(tracker.refresh());
  assert.equal(tracker.current.version?.raw, '3.5.0-1', 'a failed read keeps the last reading');
});
