/** The daemon's model of HAProxy between full reads (src/daemon/model.ts). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HaproxyModel } from '../../src/daemon/model.js';
import type { ApplyResult } from '../../src/daemon/apply.js';
import type { Op } from '../../src/reconcile/index.js';
import { backend, observed } from './reconcile-helpers.js';

const ok = (op: Op): ApplyResult => ({ op, family: op.kind, ok: true, code: 'ok' });

test('maps follow the replies to our own map commands; touched backends are read again', () => {
  const m = new HaproxyModel();
  assert.equal(m.valid, false);
  assert.deepEqual(m.toRead(['http-a']), [], 'nothing known before a full read');
  m.replace(observed([backend('http-a', 2, [], 'h1'), backend('http-b', 2)], { 'a.test': 'http-a', 'old.test': 'http-b' }));
  assert.equal(m.valid, true);
  m.record([
    ok({ kind: 'map-add', map: 'hosts', key: 'b.test', value: 'http-b', why: '' }),
    ok({ kind: 'map-set', map: 'hosts', key: 'a.test', value: 'http-b', why: '' }),
    ok({ kind: 'map-del', map: 'hosts', key: 'old.test', why: '' }),
    ok({ kind: 'set-state', backend: 'http-b', server: 's1', state: 'ready', why: '' }),
  ]);
  assert.deepEqual(m.toRead(['http-a', 'http-new']), ['http-a', 'http-b'], 'scope that exists, plus the backend our commands touched');
  assert.equal(m.structureHash('http-a'), 'h1');
  const merged = m.merge(new Map([['http-b', backend('http-b', 4)]]));
  assert.deepEqual([...merged.hostsMap].sort(), [['a.test', 'http-b'], ['b.test', 'http-b']]);
  assert.equal(merged.backends.get('http-b')!.servers.length, 4, 'fresh read merged');
  assert.deepEqual(m.toRead([]), [], 'read once, no longer stale');
});

test('a refused command invalidates the model; a deleted backend leaves it', () => {
  const m = new HaproxyModel();
  m.replace(observed([backend('http-a', 1), backend('http-b', 1)]));
  m.record([ok({ kind: 'del-backend', backend: 'http-b', why: '' })]);
  assert.deepEqual(m.toRead(['http-a', 'http-b']), ['http-a']);
  m.record([{ op: { kind: 'map-del', map: 'hosts', key: 'x', why: '' }, family: 'map', ok: false, code: 'E_X' }]);
  assert.equal(m.valid, false, 'the next pass is a full one');
});
