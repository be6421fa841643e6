/**
 * The confirmed-state record (src/daemon/applied.ts): the start decision table, the record
 * on disk (round trip, mode 0600, corrupt → unknown), the test crash hook's env parsing,
 * and the map-file / server-state repairs against files on disk.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { AppliedState, repairServerStateFile, sha256, startState, testCrashPoint, type AppliedRecord } from '../../src/daemon/applied.js';
import { repairMapFiles } from '../../src/daemon/apply.js';
import { ConfigError } from '../../src/errors.js';

async function tmp(t: { after(fn: () => Promise<void>): void }): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'hu-applied-unit-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

const rec = (config: string): AppliedRecord => ({ version: 1, sha256: sha256(config), config, by: 'reload', confirmedAt: '2026-01-01T00:00:00.000Z' });

test('start decision: what runs, and whether to reload', () => {
  const rows: Array<[string, string | null, AppliedRecord | null, 'started' | 'adopted' | 'external', { running: string; mustReload: boolean }]> = [
    ['HAProxy started from the file now', 'NEW', rec('OLD'), 'started', { running: 'NEW', mustReload: false }],
    ['adopted, file confirmed', 'OLD', rec('OLD'), 'adopted', { running: 'OLD', mustReload: false }],
    ['adopted, crash between rename and reload', 'NEW', rec('OLD'), 'adopted', { running: 'OLD', mustReload: true }],
    ['external, crash between rename and reload', 'NEW', rec('OLD'), 'external', { running: 'OLD', mustReload: true }],
    ['adopted, no record (older updater): reload once', 'NEW', null, 'adopted', { running: 'NEW', mustReload: true }],
    ['external, no file, no record', null, null, 'external', { running: '', mustReload: true }],
    ['adopted, record but file gone', null, rec('OLD'), 'adopted', { running: 'OLD', mustReload: true }],
  ];
  for (const [name, onDisk, record, how, want] of rows) assert.deepEqual(startState(onDisk, record, how), want, name);
});

test('record: confirm writes 0600 JSON that read returns; a corrupt or tampered record reads as unknown', async (t) => {
  const dir = await tmp(t);
  const file = path.join(dir, 'applied.json');
  const applied = new AppliedState(file);
  assert.equal(await applied.read(), null);
  await applied.confirm('global\n', 'reload');
  assert.equal((await stat(file)).mode & 0o777, 0o600);
  const r = await applied.read();
  assert.deepEqual([r?.config, r?.sha256, r?.by], ['global\n', sha256('global\n'), 'reload']);
  await writeFile(file, JSON.stringify({ ...r, config: 'other\n' }));
  assert.equal(await applied.read(), null, 'hash does not match the config');
  await writeFile(file, '{"version":1,');
  assert.equal(await applied.read(), null, 'truncated');
});

test('atStart records the file HAProxy was started from, and only then', async (t) => {
  const dir = await tmp(t);
  const applied = new AppliedState(path.join(dir, 'applied.json'));
  await applied.confirm('OLD', 'reload');
  assert.deepEqual(await applied.atStart('NEW', 'adopted'), { running: 'OLD', mustReload: true });
  assert.equal((await applied.read())?.config, 'OLD', 'an unconfirmed file is not recorded');
  assert.deepEqual(await applied.atStart('NEW', 'started'), { running: 'NEW', mustReload: false });
  assert.deepEqual([(await applied.read())?.config, (await applied.read())?.by], ['NEW', 'start']);
});

test('test crash hook: off when unset or empty, after-rename accepted, anything else a ConfigError naming the variable', () => {
  assert.equal(testCrashPoint({}), null);
  assert.equal(testCrashPoint({ HAPROXY_UPDATER_TEST_CRASH_AT: '' }), null);
  assert.equal(testCrashPoint({ HAPROXY_UPDATER_TEST_CRASH_AT: 'after-rename' }), 'after-rename');
  assert.throws(() => testCrashPoint({ HAPROXY_UPDATER_TEST_CRASH_AT: 'after-reload' }), (e: unknown) => e instanceof ConfigError && /HAPROXY_UPDATER_TEST_CRASH_AT='after-reload'/.test(e.message));
});

test('map files: rewritten (sorted) when they differ from the runtime maps; a map the config does not load is left alone', async (t) => {
  const dir = await tmp(t);
  const settings = { hostsMap: path.join(dir, 'hosts.map'), sniMap: path.join(dir, 'sni.map') };
  const config = `use_backend %[req.hdr(host),lower,map(${settings.hostsMap})]\n`;
  const runtime = { hostsMap: new Map([['web.test', 'http-web'], ['api.test', 'http-api']]), sniMap: new Map([['x.test', 'tls-x']]) };
  await writeFile(settings.hostsMap, 'web.test http-web\nold.test http-web\n');
  await writeFile(settings.sniMap, 'stale\n');
  assert.deepEqual(await repairMapFiles(runtime, settings, config), [settings.hostsMap]);
  assert.equal(await readFile(settings.hostsMap, 'utf8'), 'api.test http-api\nweb.test http-web\n');
  assert.equal(await readFile(settings.sniMap, 'utf8'), 'stale\n', 'sni map not loaded by this config');
  assert.deepEqual(await repairMapFiles(runtime, settings, config), [], 'in step: nothing written');
});

const HEADER = '1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port\n';
const row = (addr: string, port: number, admin: number, since: number) => `3 http-web 1 s1 ${addr} 2 ${admin} 1 1 ${since} 6 3 4 6 0 0 0 slot.invalid ${port} - 0 0 - - 0\n`;

test('server-state file: rewritten when an address, port, admin state or weight differs; not for timers or check results', async (t) => {
  const dir = await tmp(t);
  const file = path.join(dir, 'server-state');
  let live = HEADER + row('127.0.0.1', 8080, 0, 5);
  const runtime = async () => live;
  assert.equal(await repairServerStateFile(runtime, file), true, 'missing file written');
  assert.equal(await readFile(file, 'utf8'), live);
  live = HEADER + row('127.0.0.1', 8080, 0, 99);
  assert.equal(await repairServerStateFile(runtime, file), false, 'only the time since the last change moved');
  await writeFile(file, HEADER + row('127.0.0.9', 9, 0, 5));
  assert.equal(await repairServerStateFile(runtime, file), true);
  assert.equal(await readFile(file, 'utf8'), live);
  live = HEADER + row('127.0.0.1', 8080, 1, 99);
  assert.equal(await repairServerStateFile(runtime, file), true, 'admin state (maint) changed');
});
