/**
 * The pure quarantine rules (src/reconcile/quarantine.ts): which services a refused render
 * is pinned on given the checks' answers, how many checks that takes, and when a left-out
 * service is tried again.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  acceptedServices,
  applyQuarantine,
  changedServices,
  findCulprits,
  quarantineEntry,
  serviceKey,
  tcpServicesOnPorts,
  type SubsetCheck,
} from '../../src/reconcile/index.js';
import { MAX_SLOTS, slotCapacity, structureHash } from '../../src/model.js';
import { defaultSettings, renderConfig } from '../../src/render/index.js';
import { parseOptions } from '../../src/watch/index.js';
import { InvalidArgumentError } from '../../src/errors.js';
import { http, reg, tcp, up } from './reconcile-helpers.js';

/** A check that refuses any subset containing one of `bad` (HAProxy judges each service alone). */
function oracle(bad: Record<string, string>): { check: SubsetCheck; calls: string[][] } {
  const calls: string[][] = [];
  return {
    calls,
    check: async (include) => {
      calls.push([...include]);
      const hit = include.find((b) => b in bad);
      return hit ? { ok: false, message: bad[hit]! } : { ok: true };
    },
  };
}

const names = (n: number) => Array.from({ length: n }, (_, i) => `http-s${String(i).padStart(2, '0')}`);

test('findCulprits: one bad service among one suspect costs one check (the base)', async () => {
  const o = oracle({ 'http-bad': 'regex error' });
  const r = await findCulprits(['http-bad'], 'full refusal', o.check);
  assert.deepEqual(r.culprits, [{ backend: 'http-bad', message: 'full refusal' }]);
  assert.equal(r.checks, 1);
  assert.deepEqual(o.calls, [[]], 'only the config without any suspect was checked');
});

test('findCulprits: a bad and a good suspect: the bad one alone, with its own message', async () => {
  const o = oracle({ 'http-bad': "regex '^/x\\u0041' invalid" });
  const r = await findCulprits(['http-bad', 'http-good'], 'full refusal', o.check);
  assert.deepEqual(r.culprits, [{ backend: 'http-bad', message: "regex '^/x\\u0041' invalid" }]);
  assert.equal(r.baseRefused, null);
  assert.equal(r.checks, 3);
});

test('findCulprits: one bad among 64 takes ~2·log2(64) checks, not 64', async () => {
  const all = names(64);
  const o = oracle({ [all[41]!]: 'bad' });
  const r = await findCulprits(all, 'full', o.check);
  assert.deepEqual(r.culprits.map((c) => c.backend), [all[41]]);
  assert.ok(r.checks <= 1 + 2 * 6, `${r.checks} checks`);
});

test('findCulprits: every bad service is found, none of the good ones', async () => {
  const all = names(20);
  const bad = { [all[0]!]: 'a', [all[7]!]: 'b', [all[19]!]: 'c' };
  const r = await findCulprits(all, 'full', oracle(bad).check);
  assert.deepEqual(r.culprits.map((c) => c.backend).sort(), Object.keys(bad).sort());
  assert.deepEqual(r.culprits.map((c) => c.message).sort(), ['a', 'b', 'c']);
});

test('findCulprits: refused without any suspect: the cause is elsewhere, nobody is blamed', async () => {
  const r = await findCulprits(['http-a', 'http-b'], 'full', async () => ({ ok: false, message: 'global section broken' }));
  assert.deepEqual(r.culprits, []);
  assert.equal(r.baseRefused, 'global section broken');
  assert.equal(r.checks, 1);
});

test('findCulprits: refused only together (an interaction): nobody is blamed', async () => {
  // Each alone passes, both together fail: no single service is the cause.
  const check: SubsetCheck = async (inc) => (inc.length === 2 ? { ok: false, message: 'clash' } : { ok: true });
  const r = await findCulprits(['http-a', 'http-b'], 'clash', check);
  assert.deepEqual(r.culprits, []);
});

test('applyQuarantine: left out while unchanged; released when its keys change or it goes', () => {
  const bad = http('bad', [up('u1', '10.0.0.1:80')], { urlReg: '^/x\\u0041' });
  const good = http('good', [up('u1', '10.0.0.2:80')]);
  const q = new Map([['http-bad', quarantineEntry(bad, 'regex error', 1)]]);

  const v = applyQuarantine(reg(bad, good), q);
  assert.deepEqual([...v.registry.http.keys()], ['good']);
  assert.deepEqual([...v.kept.keys()], ['http-bad']);
  assert.deepEqual(v.released, []);

  // A new upstream is runtime state: still left out (no refused re-try per registration).
  const moreUpstreams = http('bad', [up('u1', '10.0.0.1:80'), up('u2', '10.0.0.3:80')], { urlReg: '^/x\\u0041' });
  assert.deepEqual([...applyQuarantine(reg(moreUpstreams, good), q).registry.http.keys()], ['good']);

  const fixed = http('bad', [up('u1', '10.0.0.1:80')], { urlReg: '^/xA' });
  const f = applyQuarantine(reg(fixed, good), q);
  assert.deepEqual([...f.registry.http.keys()].sort(), ['bad', 'good']);
  assert.deepEqual(f.released.map((e) => e.backend), ['http-bad']);
  assert.equal(f.kept.size, 0);

  const gone = applyQuarantine(reg(good), q);
  assert.deepEqual(gone.released.map((e) => e.backend), ['http-bad']);
});

test('changedServices: new and changed services are the suspects, unchanged ones are not', () => {
  const a = http('a', []);
  const b = http('b', [], { urlReg: '^/b' });
  const c = tcp('c', [], [7000]);
  const applied = new Map([
    ['http-a', structureHash(a)],
    ['http-b', structureHash(http('b', []))],
  ]);
  assert.deepEqual(changedServices(reg(a, b, c), applied, structureHash), ['http-b', 'tcp-c']);
});

test('tcpServicesOnPorts and serviceKey: a port is pinned on the tcp service that binds it', () => {
  const r = reg(tcp('db', [], [5432]), tcp('cache', [], [6379, 6380]), http('web', []));
  assert.deepEqual([...tcpServicesOnPorts(r, [6380, 5432, 80])].sort(), [[5432, 'tcp-db'], [6380, 'tcp-cache']]);
  assert.equal(serviceKey('/haproxy-discover', { kind: 'tcp', service: 'db' }), '/haproxy-discover/tcp-services/db');
});

test('one owner per rule: what the registry parser accepts, the renderer renders (healthPath, more upstreams than MAX_SLOTS)', () => {
  const samples = ['/', '/health', '/h?x=1&y=%20', '/a/b.c-d_e~f', '/x'.repeat(100), '/é', '/a b', '/a#b', '/a;b', "/a'b", 'health', '/a\\b', '/$x', '/`x`'];
  const settings = defaultSettings('/var/lib/hu');
  for (const healthPath of samples) {
    const parsed = parseOptions(JSON.stringify({ healthPath }));
    let rendered = true;
    try {
      renderConfig({ registry: reg(http('svc', [], { options: { healthPath } })), capacity: new Map(), settings });
    } catch (err) {
      assert.ok(err instanceof InvalidArgumentError, String(err));
      rendered = false;
    }
    assert.equal(rendered, parsed.ok, `${JSON.stringify(healthPath)}: parser ${parsed.ok ? 'accepts' : 'rejects'}, renderer ${rendered ? 'renders' : 'refuses'}`);
  }
  // Slots: the plan's capacity for MAX_SLOTS + 10 upstreams is what the template accepts; the rest overflow at runtime.
  const many = Array.from({ length: MAX_SLOTS + 10 }, (_, i) => up(`u${i}`, `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}:80`));
  const cap = slotCapacity(many.length, 1);
  assert.equal(cap, MAX_SLOTS);
  const r = renderConfig({ registry: reg(http('big', many)), capacity: new Map([['http-big', cap]]), settings });
  assert.match(r.config, new RegExp(`server-template s 1-${MAX_SLOTS} `));
});

test('a refused change of a running service keeps the running version (with today\'s upstreams), not nothing', () => {
  const running = http('web', [up('u1', '10.0.0.1:80')], { domains: ['web.test'] });
  const badEdit = http('web', [up('u1', '10.0.0.1:80'), up('u2', '10.0.0.2:80')], { domains: ['web.test'], urlReg: '(?<=a+)b' });
  const accepted = acceptedServices(new Map(), reg(running), new Map([['http-web', structureHash(running)]]), structureHash);
  assert.deepEqual([...accepted.keys()], ['http-web']);
  const q = new Map([['http-web', quarantineEntry(badEdit, 'refused', 1)]]);
  const v = applyQuarantine(reg(badEdit), q, accepted);
  const web = v.registry.http.get('web')!;
  assert.equal(web.urlReg, null, 'the running structure');
  assert.deepEqual([...web.upstreams.keys()], ['u1', 'u2'], "today's upstreams");
  assert.equal(structureHash(web), structureHash(running), 'nothing to reload for it');
  // Forgotten once the running config no longer has the backend.
  assert.equal(acceptedServices(accepted, reg(), new Map(), structureHash).size, 0);
});
