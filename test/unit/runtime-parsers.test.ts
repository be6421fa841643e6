/** Parsers on replies captured from HAProxy 2.6.12 (test/fixtures/runtime/*.txt). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as E from '../../src/errors.js';
import * as R from '../../src/runtime/index.js';
import { fixture } from '../fixtures/runtime/fake-socket.js';

test('parseServersState: slots in every state, from a full and a per-backend dump', async () => {
  const rows = R.parseServersState(await fixture('show-servers-state'));
  assert.equal(rows.length, 6);
  const [s1, s2, s3, s4, b2s1] = rows;
  assert.deepEqual(
    { ...s1, raw: undefined },
    {
      raw: undefined,
      beId: 4,
      beName: 'b1',
      srvId: 1,
      srvName: 's1',
      srvAddr: '127.0.0.1',
      srvOpState: 2,
      srvAdminState: 4,
      srvUweight: 1,
      srvIweight: 1,
      srvTimeSinceLastChange: 12,
      srvCheckStatus: 6,
      srvCheckResult: 3,
      srvCheckHealth: 3,
      srvCheckState: 6,
      srvAgentState: 0,
      bkFForcedId: 0,
      srvFForcedId: 0,
      srvFqdn: 'slot.invalid',
      srvPort: 18481,
      srvrecord: null,
      srvUseSsl: 0,
      srvCheckPort: 0,
      srvCheckAddr: null,
      srvAgentAddr: null,
      srvAgentPort: 0,
    },
  );
  assert.equal(s1?.raw.srv_admin_state, '4');
  // Ready slot: CMAINT (4) stays set but is not maintenance.
  assert.equal(R.isMaint(s1!), false);
  assert.equal(R.isDrain(s1!), false);
  // Drained: 12 = FDRAIN|CMAINT.
  assert.equal(s2?.srvAdminState, 12);
  assert.equal(R.isDrain(s2!), true);
  assert.equal(R.isMaint(s2!), false);
  // Free slot: 5 = FMAINT|CMAINT, 0.0.0.0 port 1, check state 14 (paused).
  assert.deepEqual([s3?.srvAddr, s3?.srvPort, s3?.srvAdminState, s3?.srvCheckState], ['0.0.0.0', 1, 5, 14]);
  assert.equal(R.isMaint(s3!), true);
  assert.equal(s4?.srvOpState, R.SRV_OP.STOPPED);
  assert.equal(b2s1?.srvAddr, '::1');
  assert.deepEqual(R.parseServersState(await fixture('show-servers-state-b1')).map((r) => r.srvName), ['s1', 's2', 's3', 's4']);
});

test('parseServersState: empty backend, flags, and malformed input', () => {
  const header = '1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port\n';
  assert.deepEqual(R.parseServersState(header), []);
  assert.equal(R.isMaint({ srvAdminState: R.SRV_ADMIN.RMAINT }), true);
  assert.equal(R.isMaint({ srvAdminState: R.SRV_ADMIN.IMAINT }), true);
  assert.equal(R.isMaint({ srvAdminState: R.SRV_ADMIN.CMAINT }), false);
  assert.equal(R.isDrain({ srvAdminState: R.SRV_ADMIN.FDRAIN | R.SRV_ADMIN.FMAINT }), true);
  assert.throws(() => R.parseServersState("Can't find backend.\n\n"), E.ReplyParseError);
  assert.throws(() => R.parseServersState('1\nno header\n'), E.ReplyParseError);
  assert.throws(() => R.parseServersState(header + '4 b1 1\n'), E.ReplyParseError);
});

test('parseStat: typed columns plus every column by header name', async () => {
  const all = R.parseStat(await fixture('show-stat'));
  assert.deepEqual(
    all.map((r) => `${r.pxname}/${r.svname}`),
    ['fe/FRONTEND', 'no-route/BACKEND', 'b1/s1', 'b1/s2', 'b1/s3', 'b1/s4', 'b1/BACKEND', 'b2/s1', 'b2/s2', 'b2/BACKEND'],
  );
  assert.equal(all[0]?.status, 'OPEN');
  assert.equal(all[0]?.stot, 6);
  assert.equal(all[0]?.qcur, null, 'empty cells are null');
  const servers = R.parseStat(await fixture('show-stat-b1-servers'));
  const [s1, s2, s3, s4] = servers;
  assert.deepEqual(
    [s1?.status, s1?.checkStatus, s1?.checkDesc, s1?.addr, s1?.scur, s1?.qcur, s1?.weight, s1?.type, s1?.sid],
    ['UP', 'L4OK', 'Layer4 check passed', '127.0.0.1:18481', 0, 0, 1, 2, 1],
  );
  assert.equal(s2?.status, 'DRAIN');
  assert.deepEqual([s3?.status, s3?.addr, s3?.checkStatus], ['MAINT', '0.0.0.0:1', '']);
  assert.deepEqual([s4?.status, s4?.checkStatus, s4?.lastChk, s4?.checkDesc], ['DOWN', 'L4CON', 'Connection refused', 'Layer4 connection problem']);
  // All columns, by name, including the odd `-` column HAProxy 2.6 emits.
  assert.equal(s1?.fields.algo, '');
  assert.equal(s1?.fields.check_rise, '2');
  assert.ok('-' in (s1?.fields ?? {}));
  assert.equal(Object.keys(s1?.fields ?? {}).length, 128);
});

test('parseStat: quoted CSV fields and malformed input', () => {
  assert.deepEqual(R.splitCsvLine('a,"b,c","d""e",,'), ['a', 'b,c', 'd"e', '', '']);
  assert.throws(() => R.splitCsvLine('a,"b'), E.ReplyParseError);
  assert.throws(() => R.parseStat('No such proxy.\n\n'), E.ReplyParseError);
  const rows = R.parseStat('# pxname,svname,status,check_desc,\nb,s1,UP,"HTTP, status ""200""",\n');
  assert.equal(rows[0]?.checkDesc, 'HTTP, status "200"');
});

test('showStat always sends the full filter (HAProxy 2.6 ignores a lone proxy)', () => {
  assert.equal(R.showStat().text, 'show stat');
  assert.equal(R.showStat('b1').text, 'show stat b1 -1 -1');
  assert.equal(R.showStat('b1', R.STAT_TYPE.SERVER).text, 'show stat b1 4 -1');
  assert.equal(R.showStat(-1, 4, -1).text, 'show stat -1 4 -1');
});

test('parseInfo / summarizeInfo', async () => {
  const info = R.parseInfo(await fixture('show-info'));
  assert.equal(info.Name, 'HAProxy');
  assert.equal(info['Unstoppable Jobs'], '1');
  const s = R.summarizeInfo(info);
  assert.equal(typeof s.pid, 'number');
  assert.ok(s.pid > 0);
  assert.equal(s.stopping, false);
  assert.equal(s.currConns, 0);
  assert.match(s.version, /^2\.6\.12/);
  assert.equal(R.summarizeInfo({ ...info, Stopping: '1' }).stopping, true);
  assert.throws(() => R.parseInfo('Unknown command, but maybe\n'), E.ReplyParseError);
  assert.throws(() => R.summarizeInfo({ Pid: 'x' }), E.ReplyParseError);
});

test('parseBackendList', async () => {
  assert.deepEqual(R.parseBackendList(await fixture('show-backend')), ['no-route', 'b1', 'b2']);
  assert.deepEqual(R.parseBackendList('# name\n'), []);
  assert.throws(() => R.parseBackendList('Permission denied\n'), E.ReplyParseError);
});

test('maps: list, entries, prepare', async () => {
  assert.deepEqual(R.parseMapList(await fixture('show-maps')), [
    {
      id: 2,
      file: '/tmp/hx/hosts.map',
      description: "pattern loaded from file '/tmp/hx/hosts.map' used by map at file 'h.cfg' line 14. curr_ver=1 next_ver=1 entry_cnt=2",
      entryCount: 2,
      currVer: 1,
      nextVer: 1,
    },
  ]);
  assert.deepEqual(R.parseMapEntries(await fixture('show-map-entries')), [
    { key: 'x.test', value: 'b1' },
    { key: 'y.test', value: 'b2' },
  ]);
  assert.deepEqual(R.parseMapEntries('\n'), []);
  assert.equal(R.parsePrepareMap(await fixture('prepare-map')), 2);
  assert.throws(() => R.parsePrepareMap('Unknown map identifier. Please use #<id> or <file>.\n'), E.ReplyParseError);
  assert.throws(() => R.parseMapEntries('Unknown map identifier. Please use #<id> or <file>.\n'), E.ReplyParseError);
  assert.throws(() => R.parseMapList('garbage\n'), E.ReplyParseError);
});

test('map payload commands: one line per entry, split under the 16 kB CLI buffer', () => {
  const c = R.addMapPayload(3, '/m/hosts.map', [
    { key: 'a.example', value: 'http-a' },
    { key: 'b.example', value: 'http-b' },
  ]);
  assert.equal(c.text, 'add map @3 /m/hosts.map <<');
  assert.deepEqual(c.payload, ['a.example http-a', 'b.example http-b']);
  const many = Array.from({ length: 3000 }, (_, i) => ({ key: `host${i}.example.test`, value: 'http-backend' }));
  assert.throws(() => R.addMapPayload(1, '/m/hosts.map', many), E.InvalidArgumentError);
  const chunks = R.addMapPayloadChunks(1, '/m/hosts.map', many);
  assert.ok(chunks.length > 1);
  assert.equal(chunks.flatMap((ch) => ch.payload ?? []).length, 3000);
  for (const ch of chunks) assert.ok((ch.payload ?? []).join('\n').length < R.MAX_PAYLOAD_BYTES);
  assert.deepEqual(R.addMapPayloadChunks(1, '/m/hosts.map', []), []);
  assert.equal(R.commitMap(1, '/m/hosts.map').text, 'commit map @1 /m/hosts.map');
  assert.equal(R.clearMap('/m/hosts.map', 2).text, 'clear map @2 /m/hosts.map');
});

test('server builders produce the commands the notes verified', () => {
  assert.equal(R.setServerAddr('b1', 's1', '0.0.0.0', 1).text, 'set server b1/s1 addr 0.0.0.0 port 1');
  assert.equal(R.setServerAddr('b1', 's1', '2001:db8::1', 443).text, 'set server b1/s1 addr 2001:db8::1 port 443');
  assert.equal(
    R.addServer('c', 'x1', { addr: '127.0.0.1', port: 18099, check: true, inter: 500, rise: 1, fall: 1, weight: 10, maxconn: 100 }).text,
    'add server c/x1 127.0.0.1:18099 weight 10 check inter 500 rise 1 fall 1 maxconn 100',
  );
  // A bare `::1` is misread by HAProxy 2.6.12 (srv_addr `-`, fqdn `:`): brackets.
  assert.equal(R.addServer('c', 'x1', { addr: '::1', port: 80 }).text, 'add server c/x1 [::1]:80');
  assert.equal(R.setServerWeight('b', 's', 0).text, 'set server b/s weight 0');
  assert.equal(R.customCommand(['get', 'weight', 'b/s1']).text, 'get weight b/s1');
});

test('parseShowProc: normal, after a failed reload, with old workers', async () => {
  const p = R.parseShowProc(await fixture('show-proc'));
  assert.deepEqual(p, {
    masterPid: 6182,
    reloads: 0,
    failed: 0,
    uptime: '0d00h00m51s',
    version: '2.6.12-1+deb12u4',
    workers: [{ pid: 6197, type: 'worker', reloads: 0, uptime: '0d00h00m50s', uptimeSec: 50, version: '2.6.12-1+deb12u4' }],
    oldWorkers: [],
    programs: [],
  });
  const f = R.parseShowProc(await fixture('show-proc-failed'));
  assert.deepEqual([f.reloads, f.failed, f.workers.map((w) => [w.pid, w.reloads])], [2, 1, [[6744, 1]]]);
  const o = R.parseShowProc(await fixture('show-proc-old-workers'));
  assert.deepEqual([o.reloads, o.failed, o.workers.map((w) => w.pid), o.oldWorkers.map((w) => w.pid)], [3, 0, [6880], [6744]]);
  assert.equal(o.oldWorkers[0]?.uptimeSec, 7);
  assert.throws(() => R.parseShowProc(''), E.ReplyParseError);
  assert.throws(() => R.parseShowProc('Unknown command.\n'), E.ReplyParseError);
});

// Every error reply captured here is classified (classifyReply is the table in src/errors.ts).
const errorFixtures: Array<[string, Function]> = [
  ['err-cant-find-backend', E.NoSuchBackendError],
  ['err-no-such-proxy', E.NoSuchBackendError],
  ['err-no-such-backend', E.NoSuchBackendError],
  ['err-no-such-server', E.NoSuchServerError],
  ['err-unknown-map', E.NoSuchMapError],
  ['err-map-version', E.MapVersionError],
  ['err-key-not-found', E.MapEntryNotFoundError],
  ['err-entry-not-found', E.MapEntryNotFoundError],
  ['err-invalid-addr', E.InvalidAddressError],
  ['err-weight-range', E.InvalidWeightError],
  ['err-weight-garbage', E.InvalidWeightError],
  ['err-static-lb-weight', E.StaticLoadBalancingError],
  ['err-health-expects', E.RuntimeCommandError],
  ['err-state-expects', E.RuntimeCommandError],
  ['err-unknown-command', E.UnknownCommandError],
  ['err-del-not-maint', E.ServerNotInMaintenanceError],
  ['err-server-exists', E.ServerExistsError],
  ['err-dynamic-static-lb', E.StaticLoadBalancingError],
  ['err-dynamic-option', E.UnsupportedOptionError],
];

test('captured error replies map to their classes; captured successes are not errors', async () => {
  for (const [name, cls] of errorFixtures) {
    const err = E.classifyReply(await fixture(name), 'cmd');
    assert.ok(err instanceof cls, `${name} → ${err?.name ?? 'null'}, expected ${cls.name}`);
  }
  for (const name of ['set-addr', 'set-addr-same', 'set-addr-clear', 'get-weight', 'add-server', 'enable-health', 'set-state-maint', 'del-server', 'prepare-map', 'show-servers-state', 'show-stat', 'show-info', 'show-backend', 'show-maps', 'show-map-entries']) {
    assert.equal(E.classifyReply(await fixture(name), 'cmd'), null, name);
  }
});

test('surprise kept as a fixture: a bad port after a good address is a partial success', async () => {
  // HAProxy applies the address, then refuses the port, in one reply that starts with
  // "IP changed"; the anchored table does not see it. The builders make it unreachable
  // (ports are validated integers), so this only documents the reply.
  const reply = await fixture('err-port');
  assert.match(reply, /^IP changed from '0\.0\.0\.0' to '127\.0\.0\.1', problem converting port 'abc'/);
});
