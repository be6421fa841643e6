/** The environment of HAProxy, `haproxy -c` and iptables: an allow-list, never the updater's own. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { childEnv, DEFAULT_CHILD_PATH } from '../../src/childenv.js';
import { validateConfig } from '../../src/reload/index.js';

test('childEnv keeps PATH, locale and time zone, drops everything else', () => {
  const env = childEnv({
    PATH: '/opt/bin:/usr/bin',
    TZ: 'UTC',
    LANG: 'C.UTF-8',
    HAPROXY_UPDATER_STATS_PASSWORD: 's3cret-pw',
    HAPROXY_UPDATER_ETCD_PASSWORD: 'etcd-pw',
    ETCDCTL_PASSWORD: 'x',
    AWS_SECRET_ACCESS_KEY: 'y',
    HOME: '/root',
  });
  assert.deepEqual(env, { PATH: '/opt/bin:/usr/bin', TZ: 'UTC', LANG: 'C.UTF-8' });
  assert.deepEqual(childEnv({}), { PATH: DEFAULT_CHILD_PATH });
});

test('haproxy -c runs with the child environment (a fake haproxy records what it got)', async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'hu-childenv-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const bin = path.join(dir, 'haproxy');
  // Static script: writes its environment beside itself and accepts the config.
  await writeFile(bin, `#!/usr/bin/env node\nrequire('node:fs').writeFileSync(__dirname + '/env.json', JSON.stringify(process.env));\n`);
  await chmod(bin, 0o755);
  const cfg = path.join(dir, 'haproxy.cfg');
  await writeFile(cfg, 'global\n');
  process.env.HAPROXY_UPDATER_STATS_PASSWORD = 'must-not-leak';
  try {
    await validateConfig(cfg, { haproxyBin: bin });
  } finally {
    delete process.env.HAPROXY_UPDATER_STATS_PASSWORD;
  }
  const seen = JSON.parse(await readFile(path.join(dir, 'env.json'), 'utf8')) as Record<string, string>;
  assert.equal(seen.HAPROXY_UPDATER_STATS_PASSWORD, undefined);
  assert.ok(!JSON.stringify(seen).includes('must-not-leak'));
  assert.equal(seen.PATH, process.env.PATH);
});
