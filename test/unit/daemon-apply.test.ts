/**
 * applyOps writes the map files from the planner's `write-map-file` entries (what the
 * simulator checks), not from a second rendering of the registry; and the slot capacity
 * rule has one owner that the template's default and the planner share.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { applyOps, defaultSettings } from '../../src/daemon/index.js';
import { RuntimeClient } from '../../src/runtime/index.js';
import { desiredCapacity, type Op } from '../../src/reconcile/index.js';
import { defaultSlots } from '../../src/render/index.js';
import { DEFAULT_OPTIONS, MAX_SLOTS, slotCapacity, type HttpService } from '../../src/model.js';

test('applyOps: a write-map-file op writes exactly its entries (no socket needed)', async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'hu-apply-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const settings = defaultSettings(dir);
  // Nothing listens here: a command would fail, a file write needs no socket.
  const runtime = new RuntimeClient({ path: path.join(dir, 'none.sock') }, { timeoutMs: 200 });
  const ops: Op[] = [
    { kind: 'write-map-file', map: 'hosts', entries: [['a.example', 'http-a'], ['b.example', 'http-b']], why: 'test' },
    { kind: 'write-map-file', map: 'sni', entries: [], why: 'test' },
  ];
  const results = await applyOps(runtime, ops, settings);
  assert.deepEqual(results.map((r) => [r.family, r.ok]), [['write-map-file', true], ['write-map-file', true]]);
  assert.equal(await readFile(settings.hostsMap, 'utf8'), 'a.example http-a\nb.example http-b\n');
  assert.equal(await readFile(settings.sniMap, 'utf8'), '');
});

test('slot capacity: one rule for the planner and the template default, bounded by MAX_SLOTS', () => {
  const svc = (n: number, minSlots: number): HttpService => ({
    kind: 'http',
    name: 'x',
    domains: [],
    urlReg: null,
    sslPassthrough: false,
    upstreams: new Map(Array.from({ length: n }, (_, i) => [`u${i}`, { id: `u${i}`, addr: `10.0.${i >> 8}.${i & 255}`, port: 80, weight: 1, state: 'ready' as const }])),
    options: { ...DEFAULT_OPTIONS, minSlots },
  });
  for (const [n, min] of [[0, 4], [3, 4], [5, 4], [100, 1], [600, 16], [1025, 1024]] as const) {
    assert.equal(defaultSlots(svc(n, min)), desiredCapacity(n, min), `${n} upstreams, minSlots ${min}`);
  }
  assert.equal(slotCapacity(MAX_SLOTS + 1, 4), MAX_SLOTS);
  assert.equal(desiredCapacity(10_000, 4, 9_000), MAX_SLOTS);
});
