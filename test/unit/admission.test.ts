import { test } from 'node:test';
import assert from 'node:assert/strict';
import { plan } from '../../src/reconcile/index.js';
import { probeSpecFor } from '../../src/admission/spec.js';
import { staleReason } from '../../src/admission/admit.js';
import { admissionMode, holdsNewServers } from '../../src/admission/mode.js';
import { parseArgv, Flags } from '../../src/config.js';
import { ConfigError } from '../../src/errors.js';
import { SRV_ADMIN, SRV_OP } from '../../src/model.js';
import type { ServerStateRow } from '../../src/runtime/index.js';
import type { AdmissionCandidate } from '../../src/reconcile/index.js';
import { activeSlot, backendOf, ctx, http, observed, reg, tcp, up } from './reconcile-helpers.js';

const A = 'http-a';
const brief = (c: AdmissionCandidate) => `${c.backend}/${c.server} ${c.upstreamId} ${c.addr}:${c.port} ${c.held} ${c.probe.kind}`;

test('plan: with hold, a slot activation is listed for admission with the probe of its check; without hold nothing is', () => {
  const svc = http('a', [up('u1', '10.0.0.1:80'), up('u2', '10.0.0.2:80')], { domains: ['a.example'], options: { healthPath: '/healthz' } });
  const obs = observed([backendOf(svc, 4, [activeSlot(A, 1, '10.0.0.1:80')])], { 'a.example': A });
  const held = plan(reg(svc), obs, ctx({ holdUntilHealthy: true }));
  assert.deepEqual(held.admission.map(brief), [`${A}/s2 u2 10.0.0.2:80 down http`]);
  assert.deepEqual(held.admission[0]?.probe, { kind: 'http', path: '/healthz', tls: false });
  assert.deepEqual(plan(reg(svc), obs, ctx({ holdUntilHealthy: false })).admission, []);
});

test('plan: an overflow server waiting in maint is listed as held in maint', () => {
  const ups = [1, 2, 3, 4, 5].map((i) => up(`u${i}`, `10.0.0.${i}:80`));
  const svc = http('a', ups, { domains: ['a.example'] });
  const obs = observed([backendOf(svc, 4, [1, 2, 3, 4].map((i) => activeSlot(A, i, `10.0.0.${i}:80`)))], { 'a.example': A });
  const p = plan(reg(svc), obs, ctx({ holdUntilHealthy: true }));
  assert.deepEqual(p.admission.map(brief), [`${A}/x1 u5 10.0.0.5:80 maint tcp`]);
  assert.ok(p.ops.some((o) => o.kind === 'add-server' && o.server === 'x1'));
});

test('plan: a slot back from maint is listed; an upstream added in drain or maint is not', () => {
  const svc = http('a', [up('u1', '10.0.0.1:80'), up('u2', '10.0.0.2:80', { state: 'drain' }), up('u3', '10.0.0.3:80', { state: 'maint' })], { domains: ['a.example'] });
  const obs = observed([backendOf(svc, 4, [activeSlot(A, 1, '10.0.0.1:80', { maint: true, up: false, status: 'MAINT' })])], { 'a.example': A });
  assert.deepEqual(plan(reg(svc), obs, ctx({ holdUntilHealthy: true })).admission.map(brief), [`${A}/s1 u1 10.0.0.1:80 down tcp`]);
});

test('probeSpecFor mirrors the backend check: tcp, GET healthPath (over TLS for sslpass), TLS handshake', () => {
  assert.deepEqual(probeSpecFor(tcp('t', [])), { kind: 'tcp' });
  assert.deepEqual(probeSpecFor(http('h', [])), { kind: 'tcp' });
  assert.deepEqual(probeSpecFor(http('h', [], { options: { healthPath: '/h' } })), { kind: 'http', path: '/h', tls: false });
  assert.deepEqual(probeSpecFor(http('h', [], { sslPassthrough: true })), { kind: 'tls' });
  assert.deepEqual(probeSpecFor(http('h', [], { sslPassthrough: true, options: { healthPath: '/h' } })), { kind: 'http', path: '/h', tls: true });
});

test('staleReason: a passing probe lets the server in only if slot and registry still agree', () => {
  const c: AdmissionCandidate = { backend: A, server: 's2', upstreamId: 'u2', addr: '10.0.0.2', port: 80, held: 'down', probe: { kind: 'tcp' } };
  const row = (o: Partial<ServerStateRow> = {}) => ({ srvName: 's2', srvAddr: '10.0.0.2', srvPort: 80, srvAdminState: SRV_ADMIN.CMAINT, srvOpState: SRV_OP.STOPPED, ...o }) as ServerStateRow;
  const desired = reg(http('a', [up('u2', '10.0.0.2:80')]));
  assert.equal(staleReason(c, row(), desired), '');
  assert.equal(staleReason(c, undefined, desired), 'server gone');
  assert.match(staleReason(c, row({ srvAddr: '10.0.0.9' }), desired), /now holds 10\.0\.0\.9:80/);
  assert.match(staleReason(c, row({ srvPort: 81 }), desired), /now holds/);
  assert.equal(staleReason(c, row({ srvAdminState: SRV_ADMIN.FMAINT }), desired), 'server in maintenance');
  assert.equal(staleReason(c, row({ srvAdminState: SRV_ADMIN.FDRAIN }), desired), 'server draining');
  assert.equal(staleReason(c, row({ srvOpState: SRV_OP.RUNNING }), desired), 'server already UP');
  assert.match(staleReason(c, row(), reg(http('a', [up('u2', '10.0.0.3:80')]))), /registry/);
  assert.match(staleReason(c, row(), reg(http('a', [up('u2', '10.0.0.2:80', { state: 'drain' })]))), /registry/);
  assert.match(staleReason(c, row(), reg(http('b', [up('u2', '10.0.0.2:80')]))), /registry/);
  assert.match(staleReason(c, row(), null), /registry/);
  const ovf: AdmissionCandidate = { ...c, server: 'x1', held: 'maint' };
  assert.equal(staleReason(ovf, row({ srvName: 'x1', srvAdminState: SRV_ADMIN.FMAINT }), desired), '');
  assert.equal(staleReason(ovf, row({ srvName: 'x1', srvAdminState: 0 }), desired), 'server already out of maintenance');
});

test('--admission: default probe; --hold-until-healthy is its alias (true = check, false = immediate), also from the env', () => {
  const mode = (argv: string[], env: NodeJS.ProcessEnv = {}) => admissionMode(new Flags(parseArgv(['run', ...argv], env)));
  assert.equal(mode([]), 'probe');
  assert.equal(mode(['--admission', 'check']), 'check');
  assert.equal(mode(['--admission=immediate']), 'immediate');
  assert.equal(mode(['--hold-until-healthy']), 'check');
  assert.equal(mode(['--no-hold-until-healthy']), 'immediate');
  assert.equal(mode([], { HAPROXY_UPDATER_HOLD_UNTIL_HEALTHY: 'false' }), 'immediate');
  assert.equal(mode([], { HAPROXY_UPDATER_ADMISSION: 'check' }), 'check');
  assert.equal(mode(['--admission', 'probe', '--hold-until-healthy']), 'probe', 'probe holds too');
  assert.equal(mode(['--admission', 'immediate', '--no-hold-until-healthy']), 'immediate');
  assert.throws(() => mode(['--admission', 'immediate', '--hold-until-healthy']), (e: unknown) => e instanceof ConfigError && /--admission immediate contradicts --hold-until-healthy/.test(e.message));
  assert.throws(() => mode(['--admission', 'check', '--no-hold-until-healthy']), ConfigError);
  assert.throws(() => mode(['--admission', 'later']), /--admission \(HAPROXY_UPDATER_ADMISSION\): 'later' is not one of probe, check, immediate/);
  assert.deepEqual((['probe', 'check', 'immediate'] as const).map(holdsNewServers), [true, true, false]);
});
