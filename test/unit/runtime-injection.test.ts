/**
 * Injection: every argument position of every builder refuses `;`, newline, `#`, space,
 * `\`, control characters (and `<<`, which switches HAProxy's CLI to payload mode), and a
 * fake socket that records every byte proves nothing at all was written.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { InvalidArgumentError } from '../../src/errors.js';
import * as R from '../../src/runtime/index.js';
import { startFakeSocket } from '../fixtures/runtime/fake-socket.js';

const fake = await startFakeSocket({
  // A well-behaved worker: answers every line with an empty reply and a prompt, closes on quit.
  respond: (sock, soFar) => {
    if (soFar.endsWith('quit\n')) {
      const lines = soFar.split('\n').length - 2;
      sock.end('\n> '.repeat(lines));
    }
  },
});
after(() => fake.close());
const client = new R.RuntimeClient({ path: fake.path }, { timeoutMs: 1000 });

const BAD_TEXT = [';', 'a;b', 'b1; set server b/s3 state maint', 'a\nb', '\n', 'a\rb', '#', 'a#b', ' ', 'a b', 'a\tb', '\\', 'a\\;b', 'a\u0000b', 'a\u001bb', 'a\u007fb', 'v<<', 'é', ''];
// Out of range for every numeric argument: 2**31. Per-argument bounds are added in the table.
const BAD_NUMBER: unknown[] = [';', '80', '80; show info', 1.5, -2, NaN, Infinity, 2 ** 31, null, '1\n', undefined];

type Case = { name: string; arg: string; bad: readonly unknown[]; build: (bad: any) => R.Command | R.Command[] };
const P = '/run/haproxy/hosts.map';
const S = (f: (b: string, s: string) => R.Command) => [
  { arg: 'backend', build: (x: any) => f(x, 's1') },
  { arg: 'server', build: (x: any) => f('b1', x) },
];
const entry = (key: string, value: string) => [{ key, value }];

const cases: Case[] = [
  { name: 'showServersState', arg: 'backend', bad: BAD_TEXT.filter((b) => b !== ''), build: (x) => R.showServersState(x) },
  ...S((b, s) => R.setServerAddr(b, s, '127.0.0.1', 80)).map((c) => ({ name: 'setServerAddr', bad: BAD_TEXT, ...c })),
  { name: 'setServerAddr', arg: 'addr', bad: [...BAD_TEXT, '1.2.3', 'example.com', '[::1]', 'fe80::1%eth0'], build: (x) => R.setServerAddr('b1', 's1', x, 80) },
  { name: 'setServerAddr', arg: 'port', bad: [...BAD_NUMBER, 0, -1, 65536, 99999], build: (x) => R.setServerAddr('b1', 's1', '127.0.0.1', x) },
  ...S((b, s) => R.setServerState(b, s, 'ready')).map((c) => ({ name: 'setServerState', bad: BAD_TEXT, ...c })),
  { name: 'setServerState', arg: 'state', bad: [...BAD_TEXT, 'ready; show info', 'up'], build: (x) => R.setServerState('b1', 's1', x) },
  ...S((b, s) => R.setServerWeight(b, s, 1)).map((c) => ({ name: 'setServerWeight', bad: BAD_TEXT, ...c })),
  { name: 'setServerWeight', arg: 'weight', bad: [...BAD_NUMBER, -1, 257, '50%'], build: (x) => R.setServerWeight('b1', 's1', x) },
  ...S((b, s) => R.setServerHealth(b, s, 'up')).map((c) => ({ name: 'setServerHealth', bad: BAD_TEXT, ...c })),
  { name: 'setServerHealth', arg: 'health', bad: [...BAD_TEXT, 'up\n'], build: (x) => R.setServerHealth('b1', 's1', x) },
  ...S((b, s) => R.addServer(b, s, { addr: '127.0.0.1', port: 80 })).map((c) => ({ name: 'addServer', bad: BAD_TEXT, ...c })),
  { name: 'addServer', arg: 'addr', bad: [...BAD_TEXT, 'host.example'], build: (x) => R.addServer('b1', 'x1', { addr: x, port: 80 }) },
  ...(['port', 'weight', 'inter', 'rise', 'fall', 'maxconn'] as const).map((k) => ({
    name: 'addServer',
    arg: k,
    bad: [...BAD_NUMBER.filter((b) => b !== undefined), { port: 65536, weight: 257, inter: 3_600_001, rise: 1001, fall: 0, maxconn: 1_000_001 }[k]],
    build: (x: unknown) => R.addServer('b1', 'x1', { addr: '127.0.0.1', port: 80, [k]: x }),
  })),
  ...S(R.delServer).map((c) => ({ name: 'delServer', bad: BAD_TEXT, ...c })),
  ...S(R.enableHealth).map((c) => ({ name: 'enableHealth', bad: BAD_TEXT, ...c })),
  ...S(R.disableHealth).map((c) => ({ name: 'disableHealth', bad: BAD_TEXT, ...c })),
  { name: 'showStat', arg: 'proxy', bad: BAD_TEXT, build: (x) => R.showStat(x) },
  { name: 'showStat', arg: 'type', bad: [...BAD_NUMBER.filter((b) => b !== undefined), 0, 8], build: (x) => R.showStat('b1', x) },
  { name: 'showStat', arg: 'sid', bad: BAD_NUMBER.filter((b) => b !== undefined), build: (x) => R.showStat('b1', 4, x) },
  { name: 'showMap', arg: 'path', bad: [...BAD_TEXT, 'relative.map', '/a/../etc/passwd', '/a//b', '/a/'], build: (x) => R.showMap(x) },
  ...(['addMap', 'setMap'] as const).flatMap((fn) => [
    { name: fn, arg: 'path', bad: [...BAD_TEXT, 'hosts.map'], build: (x: any) => R[fn](x, 'k', 'v') },
    { name: fn, arg: 'key', bad: [...BAD_TEXT, '"k"'], build: (x: any) => R[fn](P, x, 'v') },
    { name: fn, arg: 'value', bad: [...BAD_TEXT, "'v'"], build: (x: any) => R[fn](P, 'k', x) },
  ]),
  { name: 'delMap', arg: 'path', bad: BAD_TEXT, build: (x) => R.delMap(x, 'k') },
  { name: 'delMap', arg: 'key', bad: BAD_TEXT, build: (x) => R.delMap(P, x) },
  { name: 'clearMap', arg: 'path', bad: BAD_TEXT, build: (x) => R.clearMap(x) },
  { name: 'clearMap', arg: 'version', bad: BAD_NUMBER.filter((b) => b !== undefined), build: (x) => R.clearMap(P, x) },
  { name: 'prepareMap', arg: 'path', bad: BAD_TEXT, build: (x) => R.prepareMap(x) },
  { name: 'commitMap', arg: 'version', bad: [...BAD_NUMBER, -1], build: (x) => R.commitMap(x, P) },
  { name: 'commitMap', arg: 'path', bad: BAD_TEXT, build: (x) => R.commitMap(1, x) },
  { name: 'addMapPayload', arg: 'version', bad: [...BAD_NUMBER, -1], build: (x) => R.addMapPayload(x, P, entry('k', 'v')) },
  { name: 'addMapPayload', arg: 'path', bad: BAD_TEXT, build: (x) => R.addMapPayload(1, x, entry('k', 'v')) },
  { name: 'addMapPayload', arg: 'entries[0].key', bad: BAD_TEXT, build: (x) => R.addMapPayload(1, P, entry(x, 'v')) },
  { name: 'addMapPayload', arg: 'entries[0].value', bad: BAD_TEXT, build: (x) => R.addMapPayload(1, P, entry('k', x)) },
  { name: 'addMapPayloadChunks', arg: 'entries[0].value', bad: BAD_TEXT, build: (x) => R.addMapPayloadChunks(1, P, entry('k', x)) },
  { name: 'customCommand', arg: 'words[1]', bad: BAD_TEXT, build: (x) => R.customCommand(['get', x]) },
];

test('every argument position of every builder refuses unsafe values, naming argument and value', () => {
  let checked = 0;
  for (const c of cases) {
    for (const bad of c.bad) {
      assert.throws(
        () => c.build(bad),
        (err: unknown) => {
          assert.ok(err instanceof InvalidArgumentError, `${c.name}(${c.arg}=${JSON.stringify(bad)}) threw ${String(err)}`);
          assert.equal(err.code, 'E_INVALID_ARGUMENT');
          // The argument is named, and the offending value is in the context.
          assert.equal(err.context.argument, c.arg, `${c.name}: argument name`);
          assert.ok(Object.is(err.context.value, bad), `${c.name}(${c.arg}): context.value`);
          return true;
        },
        `${c.name}(${c.arg}=${JSON.stringify(bad)}) was accepted`,
      );
      checked++;
    }
  }
  assert.ok(checked > 500, `only ${checked} cases`);
});

test('an unsafe builder call inside client.batch / run / master reaches the socket with zero bytes', async () => {
  const before = fake.bytes();
  for (const c of cases) {
    for (const bad of c.bad) {
      const build = (): R.Command[] => [c.build(bad)].flat();
      await assert.rejects(async () => client.batch([R.showInfo(), ...build()]), InvalidArgumentError);
      await assert.rejects(async () => client.run(build()[0]!), InvalidArgumentError);
      await assert.rejects(async () => R.exchange({ path: fake.path }, build()), InvalidArgumentError);
    }
  }
  assert.equal(fake.bytes(), before, 'not one byte was written');
  assert.equal(fake.connections(), 0, 'not even a connection was opened');
});

test('forged commands (bypassing makeCommand) are refused centrally before any byte is written', async () => {
  const forged = (text: string, payload?: string[]) => ({ text, payload }) as unknown as R.Command;
  const bad = [
    forged('show info; set server b1/s1 state maint'),
    forged('show info\nset server b1/s1 state maint'),
    forged('show info\r'),
    forged('set map /m k v<<'),
    forged('set map /m k v\\'),
    forged('show info #'),
    forged('show\u0000info'),
    forged(''),
    forged(' show info'),
    forged('add map @1 /m <<', ['k v', '', 'set server b1/s1 state maint']),
    forged('add map @1 /m <<', ['k v\nset server b1/s1 state maint']),
    forged('add map @1 /m <<', ['k;v']),
    forged('add map @1 /m <<'),
    forged('show info', ['x']),
    forged('add map @1 /m <<', Array.from({ length: 1000 }, (_, i) => `key${i}.example.test backend`)),
  ];
  for (const cmd of bad) {
    assert.throws(() => R.assertSafeCommand(cmd), InvalidArgumentError, JSON.stringify(cmd));
    await assert.rejects(() => client.batch([R.showInfo(), cmd]), InvalidArgumentError);
    await assert.rejects(() => R.exchange({ path: fake.path }, [R.showInfo(), cmd]), InvalidArgumentError);
    await assert.rejects(() => R.masterCommand({ path: fake.path }, cmd), InvalidArgumentError);
  }
  assert.equal(fake.bytes(), 0);
  assert.equal(fake.connections(), 0);
});

test('control: valid commands do reach the fake socket (the byte counter works)', async () => {
  const results = await client.batch([R.setServerAddr('b1', 's1', '::1', 8080), R.addMap(P, 'a.example', 'http-a')]);
  assert.deepEqual(
    results.map((r) => r.ok),
    [true, true],
  );
  assert.equal(fake.connections(), 1);
  assert.equal(fake.text(), `prompt\nset server b1/s1 addr ::1 port 8080\nadd map ${P} a.example http-a\nquit\n`);
});
