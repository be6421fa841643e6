import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  assignSlots,
  desiredCapacity,
  inMaint,
  observeState,
  type Placement,
  type SlotAssignment,
} from '../../src/reconcile/index.js';
import { activeSlot, dynServer, freeSlot, up } from './reconcile-helpers.js';

test('desiredCapacity: max(min, next power of two ≥ needed)', () => {
  const rows: Array<[needed: number, min: number, keep: number, want: number]> = [
    [0, 4, 0, 4],
    [1, 4, 0, 4],
    [2, 4, 0, 4],
    [3, 4, 0, 4],
    [4, 4, 0, 4],
    [5, 4, 0, 8],
    [8, 4, 0, 8],
    [9, 4, 0, 16],
    [200, 4, 0, 256],
    [1, 1, 0, 1],
    [3, 10, 0, 10],
    [11, 10, 0, 16],
    // a slot index that must survive the reload (desired upstream in s7) keeps 8 slots
    [2, 4, 7, 8],
    [2, 4, 4, 4],
  ];
  for (const [needed, min, keep, want] of rows) {
    assert.equal(desiredCapacity(needed, min, keep), want, `needed ${needed} min ${min} keep ${keep}`);
  }
});

test('scaling 1 → 200 upstreams costs O(log N) capacity changes', () => {
  let cap = desiredCapacity(1, 4);
  let changes = 0;
  for (let n = 1; n <= 200; n++) {
    if (n > cap) {
      cap = desiredCapacity(n, 4);
      changes++;
    }
  }
  assert.equal(cap, 256);
  assert.equal(changes, 6); // 8, 16, 32, 64, 128, 256
});

function where(a: SlotAssignment): Record<string, string> {
  const show = (p: Placement) =>
    p.kind === 'existing' ? `=${p.server.name}` : p.kind === 'slot' ? `+${p.server.name}` : p.kind === 'overflow' ? `+${p.name}` : 'none';
  return Object.fromEntries(a.upstreams.map((e) => [e.upstream.id, show(e.placement)]));
}

test('assignSlots: table', () => {
  const B = 'http-a';
  const rows: Array<{
    name: string;
    upstreams: ReturnType<typeof up>[];
    servers: ReturnType<typeof freeSlot>[];
    allowOverflow?: boolean;
    want: Record<string, string>;
    orphans?: string[];
  }> = [
    {
      name: 'existing upstream keeps its slot, new ones take the lowest free slots',
      upstreams: [up('a', '10.0.0.1:80'), up('b', '10.0.0.2:80'), up('c', '10.0.0.3:80')],
      servers: [freeSlot(B, 1), freeSlot(B, 2), activeSlot(B, 3, '10.0.0.2:80'), freeSlot(B, 4)],
      want: { a: '+s1', b: '=s3', c: '+s2' },
      orphans: ['s4'],
    },
    {
      name: 'matched by address whatever the id (restart: ids are not in HAProxy)',
      upstreams: [up('zz', '10.0.0.9:8080')],
      servers: [freeSlot(B, 1), activeSlot(B, 2, '10.0.0.9:8080')],
      want: { zz: '=s2' },
      orphans: ['s1'],
    },
    {
      name: 'same address on another port is another upstream',
      upstreams: [up('a', '10.0.0.1:81')],
      servers: [activeSlot(B, 1, '10.0.0.1:80'), freeSlot(B, 2)],
      want: { a: '+s2' },
      orphans: ['s1'],
    },
    {
      name: 'a draining (removed) server is taken back by its upstream',
      upstreams: [up('a', '10.0.0.1:80')],
      servers: [activeSlot(B, 1, '10.0.0.1:80', { drain: true, scur: 3 }), freeSlot(B, 2)],
      want: { a: '=s1' },
      orphans: ['s2'],
    },
    {
      name: 'a maint slot with sessions left is not free; a stale maint slot is reused',
      upstreams: [up('a', '10.0.0.1:80')],
      servers: [freeSlot(B, 1, { scur: 1 }), freeSlot(B, 2, { addr: '10.0.0.7', port: 80 })],
      want: { a: '+s2' },
      orphans: ['s1'],
    },
    {
      name: 'a ready slot holding nothing wanted is not free',
      upstreams: [up('a', '10.0.0.1:80')],
      servers: [activeSlot(B, 1, '10.0.0.5:80'), freeSlot(B, 2)],
      want: { a: '+s2' },
      orphans: ['s1'],
    },
    {
      name: 'beyond capacity: overflow x<n>, lowest unused name',
      upstreams: [up('a', '10.0.0.1:80'), up('b', '10.0.0.2:80'), up('c', '10.0.0.3:80')],
      servers: [activeSlot(B, 1, '10.0.0.1:80'), dynServer(B, 'x1', '10.0.0.9:80')],
      want: { a: '=s1', b: '+x2', c: '+x3' },
      orphans: ['x1'],
    },
    {
      name: 'static LB: no overflow',
      upstreams: [up('a', '10.0.0.1:80'), up('b', '10.0.0.2:80')],
      servers: [activeSlot(B, 1, '10.0.0.1:80')],
      allowOverflow: false,
      want: { a: '=s1', b: 'none' },
      orphans: [],
    },
    {
      name: 'two servers with the same address: the serving template slot wins',
      upstreams: [up('a', '10.0.0.1:80')],
      servers: [freeSlot(B, 1, { addr: '10.0.0.1', port: 80 }), activeSlot(B, 2, '10.0.0.1:80'), dynServer(B, 'x1', '10.0.0.1:80')],
      want: { a: '=s2' },
      orphans: ['s1', 'x1'],
    },
    {
      name: 'an overflow server keeps its upstream even when a slot is free',
      upstreams: [up('a', '10.0.0.1:80')],
      servers: [freeSlot(B, 1), dynServer(B, 'x1', '10.0.0.1:80')],
      want: { a: '=x1' },
      orphans: ['s1'],
    },
    {
      name: 'ready slot with CMAINT only (maint flag but status UP) is not free',
      upstreams: [up('a', '10.0.0.1:80'), up('b', '10.0.0.2:80')],
      servers: [activeSlot(B, 1, '10.0.0.9:80', { maint: true, status: 'UP' }), freeSlot(B, 2)],
      want: { a: '+s2', b: '+x1' },
      orphans: ['s1'],
    },
  ];
  for (const r of rows) {
    const a = assignSlots(r.upstreams, r.servers, { allowOverflow: r.allowOverflow ?? true });
    assert.deepEqual(where(a), r.want, r.name);
    if (r.orphans) assert.deepEqual(a.orphans.map((s) => s.name), r.orphans, `${r.name}: orphans`);
  }
});

test('assignSlots: duplicate addresses in the registry collapse to the first id', () => {
  const a = assignSlots([up('b', '10.0.0.1:80'), up('a', '10.0.0.1:80')], [freeSlot('x', 1), freeSlot('x', 2)], {
    allowOverflow: true,
  });
  assert.deepEqual(where(a), { a: '+s1' });
  assert.deepEqual(a.duplicates, [{ id: 'b', keptId: 'a' }]);
});

test('inMaint: CMAINT alone (admin 4, status UP) is not maintenance', () => {
  assert.equal(inMaint({ maint: true, status: 'MAINT' }), true);
  assert.equal(inMaint({ maint: true, status: 'MAINT (resolution)' }), true);
  assert.equal(inMaint({ maint: true, status: '' }), true);
  assert.equal(inMaint({ maint: true, status: 'UP' }), false);
  assert.equal(inMaint({ maint: true, status: 'DOWN 1/2' }), false);
  assert.equal(inMaint({ maint: false, status: 'MAINT' }), false);
});

test('observeState: admin flags, op state, stats, check state', () => {
  const o = observeState({
    servers: [
      { beName: 'http-a', srvName: 's1', srvAddr: '0.0.0.0', srvOpState: 0, srvAdminState: 5, srvUweight: 1, srvPort: 1, srvCheckState: 14 },
      { beName: 'http-a', srvName: 's2', srvAddr: '127.0.0.1', srvOpState: '2', srvAdminState: '4', srvUweight: '7', srvPort: '18082' },
      { beName: 'http-a', srvName: 's3', srvAddr: '127.0.0.2', srvOpState: 2, srvAdminState: 12, srvUweight: 1, srvPort: 80 },
      { beName: 'http-a', srvName: 'x1', srvAddr: '127.0.0.3', srvOpState: 0, srvAdminState: 1, srvUweight: 1, srvPort: 80, srvCheckState: 2 },
    ],
    stats: [
      { pxname: 'http-a', svname: 'FRONTEND', scur: 9, qcur: 0, status: 'OPEN' },
      { pxname: 'http-a', svname: 's2', scur: '3', qcur: '1', status: 'UP', checkStatus: 'L7OK' },
      { pxname: 'http-a', svname: 's3', scur: 0, qcur: 0, status: 'DRAIN', checkStatus: 'L4OK' },
    ],
    structureHashes: new Map([['http-a', 'abc'], ['tcp-empty', 'def']]),
    hostsMap: new Map([['a.example', 'http-a']]),
    sniMap: new Map(),
  });
  const a = o.backends.get('http-a');
  assert.ok(a);
  assert.equal(a.templateSlots, 3);
  assert.equal(a.structureHash, 'abc');
  const [s1, s2, s3, x1] = a.servers;
  assert.deepEqual([s1?.maint, s1?.drain, s1?.up, s1?.checkEnabled], [true, false, false, true]);
  assert.deepEqual([s2?.maint, s2?.up, s2?.weight, s2?.port, s2?.scur, s2?.qcur, s2?.checkStatus], [false, true, 7, 18082, 3, 1, 'L7OK']);
  assert.deepEqual([s3?.maint, s3?.drain], [false, true]);
  assert.deepEqual([x1?.dynamic, x1?.maint, x1?.checkEnabled], [true, true, false]);
  assert.equal(o.backends.get('tcp-empty')?.servers.length, 0);
});

test('initialCapacity: the planner\'s own rule for a first render (distinct addresses, minSlots, powers of two)', async () => {
  const { initialCapacity } = await import('../../src/reconcile/index.js');
  const { http, tcp, reg } = await import('./reconcile-helpers.js');
  const ups = (n: number) => Array.from({ length: n }, (_, i) => up(`u${i}`, `10.0.0.${i + 1}:80`));
  const cap = initialCapacity(
    reg(
      http('small', ups(1)),
      http('five', ups(5)),
      // Two ids at one address occupy one slot.
      http('dup', [up('a', '10.0.0.9:80'), up('b', '10.0.0.9:80'), up('c', '10.0.0.8:80')]),
      tcp('db', ups(3), [5432], { minSlots: 1 }),
    ),
  );
  assert.deepEqual(Object.fromEntries(cap), { 'http-small': 4, 'http-five': 8, 'http-dup': 4, 'tcp-db': 4 });
});
