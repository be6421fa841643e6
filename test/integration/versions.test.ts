/**
 * The daemon against the HAProxy under test (HAPROXY_BIN): the version `show info` reports
 * and the capabilities the table grants it are exported on /metrics, and stay after a reload.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { capabilitiesFor, versionFromHaproxyV } from '../../src/runtime/capabilities.js';
import { haproxyBin, execFileP, killHaproxy, masterView, removeDir, startEtcd, startUpdater, tempDir, waitFor } from '../../testkit/index.js';

test('haproxy_updater_haproxy_info carries the running version and its capabilities, at start and after a reload', async (t) => {
  const etcd = await startEtcd();
  t.after(() => etcd.destroy());
  const stateDir = await tempDir('hu-versions-');
  t.after(() => removeDir(stateDir));
  const updater = await startUpdater({ etcdEndpoint: etcd.endpoint, stateDir });
  t.after(async () => {
    await updater.stop();
    await killHaproxy(path.join(stateDir, 'master.sock'));
  });
  const version = versionFromHaproxyV((await execFileP(haproxyBin(), ['-v'])).stdout);
  assert.ok(version, 'haproxy -v names a version');
  const expected = capabilitiesFor(version);
  assert.ok(expected.branch, `the capability table knows ${version}`);
  const line = `haproxy_updater_haproxy_info{version="${version}",capabilities="${expected.label}"} 1`;
  const infoLines = async () => (await updater.get('/metrics')).body.split('\n').filter((l) => l.startsWith('haproxy_updater_haproxy_info{'));
  assert.deepEqual(await infoLines(), [line]);

  // A new service with a health check is structural on every version (3.4+ adds plain ones at
  // runtime): one reload, after which the version is read again.
  const before = await masterView(updater.masterSocket);
  await etcd.ctl('put', '/haproxy-discover/http-services/fresh/options', JSON.stringify({ healthPath: '/health' }));
  await etcd.ctl('put', '/haproxy-discover/http-services/fresh/domain', 'fresh.test');
  await waitFor(async () => (await masterView(updater.masterSocket)).reloads > before.reloads, { what: 'a reload', timeoutMs: 15_000 });
  await waitFor(async () => (await updater.get('/readyz')).status === 200, { what: 'ready after the reload', timeoutMs: 15_000 });
  assert.deepEqual(await infoLines(), [line]);
});
