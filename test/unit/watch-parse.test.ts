import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  parseRegistry,
  parseHost,
  parseDomains,
  parseUpstreamValue,
  parsePorts,
  parseOptions,
  parseUrlReg,
  isTruthyFlag,
  parseIp,
  formatUpstreamValue,
} from '../../src/watch/index.js';
import { DEFAULT_OPTIONS, type HttpService, type TcpService } from '../../src/model.js';

const P = '/haproxy-discover';
const H = `${P}/http-services`;
const T = `${P}/tcp-services`;

/** Values that must never reach the model, whatever the key kind. */
const HOSTILE: Array<[name: string, value: string]> = [
  ['newline', '10.0.0.1:80\nset server b/s1 state maint'],
  ['CR', '10.0.0.1:80\r'],
  ['semicolon', '10.0.0.1:80;set server b/s1 state maint'],
  ['hash', '10.0.0.1:80 # check disabled'],
  ['space', '10.0.0.1 :80'],
  ['backslash', '10.0.0.1:80\\'],
  ['NUL', '10.0.0.1:80\0'],
  ['tab', '10.0.0.1:\t80'],
  ['DEL', '10.0.0.1:80\x7f'],
  ['C1 control', '10.0.0.1:80\u0085'],
  ['100 kB', '1'.repeat(100_000)],
  ['fullwidth digits', '１０.0.0.1:80'],
  ['fullwidth port', '10.0.0.1:８０'],
  ['arabic-indic digits', '١٠.0.0.1:80'],
  ['invalid UTF-8 (U+FFFD)', '10.0.0.1:80\uFFFD'],
];

// ------------------------------------------------------------------------------ validators

test('parseHost: DNS names in, canonical lower case out; everything else refused', () => {
  const good: Array<[string, string]> = [
    ['example.com', 'example.com'],
    ['Example.COM', 'example.com'],
    ['example.com.', 'example.com'],
    ['a-b.c-d.example', 'a-b.c-d.example'],
    ['localhost', 'localhost'],
    ['xn--80ak6aa92e.com', 'xn--80ak6aa92e.com'],
    ['x'.repeat(63) + '.com', 'x'.repeat(63) + '.com'],
    [Array(4).fill('a'.repeat(61)).join('.') + '.ab', Array(4).fill('a'.repeat(61)).join('.') + '.ab'],
  ];
  for (const [input, want] of good) assert.deepEqual(parseHost(input), { ok: true, value: want }, input);
  const badHosts: Array<[string, RegExp]> = [
    ['', /empty/],
    ['.', /empty/],
    ['ехаmple.com', /outside \[A-Za-z0-9.-\]/], // Cyrillic е, х, а
    ['exam\u0440le.com', /outside/], // Cyrillic р
    ['\u212Aelvin.example', /outside/], // KELVIN SIGN lower-cases to ASCII k: refused before lower-casing
    ['ex\u0130mple.com', /outside/], // dotted capital I
    ['ｅxample.com', /outside/], // fullwidth e
    ['bücher.de', /outside/],
    ['exa mple.com', /outside/],
    ['example.com\n', /outside/],
    ['example.com;x', /outside/],
    ['example.com#', /outside/],
    ['ex\\ample.com', /outside/],
    ['*.example.com', /outside/],
    ['under_score.com', /outside/],
    ['-lead.com', /invalid label/],
    ['trail-.com', /invalid label/],
    ['a..b', /invalid label/],
    ['x'.repeat(64) + '.com', /invalid label/],
    [Array(5).fill('a'.repeat(60)).join('.'), /longer than 253/],
    ['10.0.0.1', /numeric top-level/],
    ['example.com..', /invalid label/],
  ];
  for (const [input, reason] of badHosts) {
    const r = parseHost(input);
    assert.equal(r.ok, false, JSON.stringify(input));
    if (!r.ok) assert.match(r.reason, reason, JSON.stringify(input));
  }
});

test('parseDomains: comma/space lists, deduplicated and sorted; one bad name rejects the value', () => {
  assert.deepEqual(parseDomains('b.example, A.example b.example.'), { ok: true, value: ['a.example', 'b.example'] });
  assert.deepEqual(parseDomains('a.example,,b.example'), { ok: true, value: ['a.example', 'b.example'] });
  assert.deepEqual(parseDomains(''), { ok: true, value: [] });
  for (const v of ['a.example\nb.example', 'a.example;b.example', 'a.example\tb.example', 'a.example ехаmple.com', 'a.example #x']) {
    assert.equal(parseDomains(v).ok, false, JSON.stringify(v));
  }
});

test('parseIp: literal IPv4/IPv6 only, canonical form', () => {
  const good: Array<[string, string]> = [
    ['10.0.0.1', '10.0.0.1'],
    ['255.255.255.255', '255.255.255.255'],
    ['::1', '::1'],
    ['2001:DB8:0:0:0:0:0:1', '2001:db8::1'],
    ['fe80::a:b', 'fe80::a:b'],
  ];
  for (const [input, want] of good) assert.deepEqual(parseIp(input), { ok: true, value: want }, input);
  for (const v of ['0.0.0.0', '::', '010.0.0.1', '10.0.0.256', '10.0.0', '10.0.0.1.2', 'example.com', 'fe80::1%eth0', '１0.0.0.1', '10.0.0.1 ', '', '::ffff:01.2.3.4']) {
    assert.equal(parseIp(v).ok, false, JSON.stringify(v));
  }
});

test('parseUpstreamValue: IP:PORT, [IPv6]:PORT and JSON forms', () => {
  const good: Array<[string, object]> = [
    ['10.0.0.1:8080', { addr: '10.0.0.1', port: 8080, weight: 1, state: 'ready' }],
    ['[::1]:80', { addr: '::1', port: 80, weight: 1, state: 'ready' }],
    ['[2001:db8::0:1]:443', { addr: '2001:db8::1', port: 443, weight: 1, state: 'ready' }],
    ['{"addr":"10.0.0.2:81"}', { addr: '10.0.0.2', port: 81, weight: 1, state: 'ready' }],
    ['{"addr":"10.0.0.2:81","weight":0,"state":"drain"}', { addr: '10.0.0.2', port: 81, weight: 0, state: 'drain' }],
    ['{"addr":"[::2]:81","weight":256,"state":"maint"}', { addr: '::2', port: 81, weight: 256, state: 'maint' }],
  ];
  for (const [input, want] of good) assert.deepEqual(parseUpstreamValue(input), { ok: true, value: want }, input);
  const badValues: Array<[string, RegExp]> = [
    ['10.0.0.1', /not IP:PORT/],
    ['10.0.0.1:0', /1-65535/],
    ['10.0.0.1:65536', /out of range/],
    ['10.0.0.1:080', /1-65535/],
    ['10.0.0.1:+80', /1-65535/],
    ['::1:80', /need brackets/],
    ['[10.0.0.1]:80', /only IPv6/],
    ['[::1]80', /\[IPv6\]:PORT/],
    ['host.example:80', /not an IPv4 or IPv6/],
    ['0.0.0.0:80', /unspecified/],
    ['{"addr":"10.0.0.1:80","weight":257}', /weight/],
    ['{"addr":"10.0.0.1:80","weight":1.5}', /weight/],
    ['{"addr":"10.0.0.1:80","weight":"1"}', /weight/],
    ['{"addr":"10.0.0.1:80","state":"up"}', /state/],
    ['{"addr":"10.0.0.1:80","check":"disabled"}', /unknown upstream field/],
    ['{"addr":"10.0.0.1:80","__proto__":{"x":1}}', /unknown upstream field/],
    ['{"weight":1}', /needs "addr"/],
    ['{"addr":"10.0.0.1:80 # x"}', /not an IPv4|not IP:PORT|port/],
    ['{"addr":', /invalid JSON/],
    ['{}x', /invalid JSON/],
  ];
  for (const [input, reason] of badValues) {
    const r = parseUpstreamValue(input);
    assert.equal(r.ok, false, input);
    if (!r.ok) assert.match(r.reason, reason, input);
  }
  for (const [name, v] of HOSTILE) assert.equal(parseUpstreamValue(v).ok, false, name);
});

test('formatUpstreamValue round-trips through parseUpstreamValue', () => {
  for (const u of [
    { addr: '10.0.0.1', port: 80 },
    { addr: '::1', port: 8080 },
    { addr: '10.0.0.1', port: 80, weight: 5 },
    { addr: '::1', port: 80, weight: 0, state: 'drain' as const },
  ]) {
    const r = parseUpstreamValue(formatUpstreamValue(u));
    assert.deepEqual(r, { ok: true, value: { weight: 1, state: 'ready', ...u } });
  }
  assert.equal(formatUpstreamValue({ addr: '10.0.0.1', port: 80 }), '10.0.0.1:80', 'seed format when defaults');
});

test('parsePorts', () => {
  assert.deepEqual(parsePorts('80'), { ok: true, value: [80] });
  assert.deepEqual(parsePorts('443,80, 8443 ,80'), { ok: true, value: [80, 443, 8443] });
  for (const v of ['', ' ', '0', '65536', '80,', ',80', '80;443', '80 443', '80\n443', '８０', '-1', '1e3', '0x50', '80,abc']) {
    assert.equal(parsePorts(v).ok, false, JSON.stringify(v));
  }
});

test('parseOptions: known keys, defaults, unknown keys refused', () => {
  assert.deepEqual(parseOptions('{}'), { ok: true, value: DEFAULT_OPTIONS });
  assert.deepEqual(parseOptions('{"balance":"leastconn","healthPath":"/health?x=1","minSlots":16,"maxconn":100}'), {
    ok: true,
    value: { balance: 'leastconn', healthPath: '/health?x=1', minSlots: 16, maxconn: 100 },
  });
  assert.deepEqual(parseOptions('{"healthPath":null,"maxconn":null}'), { ok: true, value: DEFAULT_OPTIONS });
  const badOptions: Array<[string, RegExp, ('http' | 'tcp')?]> = [
    ['{"balance":"hash"}', /balance/],
    ['{"balance":"roundrobin\\nbackend x"}', /balance/],
    ['{"healthPath":"health"}', /start with \//],
    ['{"healthPath":"/a b"}', /printable/],
    ['{"healthPath":"/a\\nb"}', /printable/],
    ['{"healthPath":"/a#b"}', /printable/],
    ['{"healthPath":"/a;b"}', /printable/],
    ['{"healthPath":"/a\\\\b"}', /printable/],
    ['{"healthPath":"/a\'b"}', /printable/],
    ['{"healthPath":"/a\\"b"}', /printable/],
    ['{"healthPath":"/${HOME}"}', /printable/],
    ['{"healthPath":"/ä"}', /printable/],
    ['{"healthPath":5}', /string or null/],
    ['{"healthPath":"/h"}', /http services only/, 'tcp'],
    ['{"minSlots":0}', /minSlots/],
    ['{"minSlots":1025}', /minSlots/],
    ['{"minSlots":2.5}', /minSlots/],
    ['{"maxconn":0}', /maxconn/],
    ['{"maxconn":"10"}', /maxconn/],
    ['{"weight":3}', /unknown option/],
    ['[]', /object/],
    ['null', /object/],
    ['roundrobin', /invalid JSON/],
  ];
  for (const [input, reason, kind] of badOptions) {
    const r = parseOptions(input, kind);
    assert.equal(r.ok, false, input);
    if (!r.ok) assert.match(r.reason, reason, input);
  }
});

test('parseUrlReg: pattern-file-safe regexes', () => {
  for (const v of ['^/api/', '^/static/.*\\.(css|js)$', '/a b#c;d\\e\'"', '[#;]', 'x{1,3}']) assert.deepEqual(parseUrlReg(v), { ok: true, value: v }, v);
  const badRegs: Array<[string, RegExp]> = [
    ['', /empty/],
    ['^/a\n^/b', /control/],
    ['^/a\r', /control/],
    ['^/a\0', /control/],
    ['^/a\t', /control/],
    ['^/a\u2028', /control/],
    ['^/a\u0085', /control/],
    ['#^/a', /start with/],
    [' ^/a', /start with/],
    ['(unclosed', /compile/],
    ['(?i)^/api', /compile/],
    ['a'.repeat(1025), /longer/],
  ];
  for (const [input, reason] of badRegs) {
    const r = parseUrlReg(input);
    assert.equal(r.ok, false, JSON.stringify(input));
    if (!r.ok) assert.match(r.reason, reason, JSON.stringify(input));
  }
});

test('isTruthyFlag (sslpass)', () => {
  for (const v of ['1', 'true', 'yes', 'on', 'TRUE', 'anything']) assert.equal(isTruthyFlag(v), true, v);
  for (const v of ['', '0', 'false', 'FALSE', 'no', 'off', ' 0 ', 'Off\n']) assert.equal(isTruthyFlag(v), false, JSON.stringify(v));
});

// ------------------------------------------------------------------------------ registry

const kv = (pairs: Record<string, string>) => Object.entries(pairs).map(([key, value]) => ({ key, value }));

test('parseRegistry: every key kind of the contract', () => {
  const { registry, rejections, ignored } = parseRegistry(
    kv({
      [`${H}/default/domain`]: 'example.com',
      [`${H}/default/upstreams/a`]: '10.0.0.1:80',
      [`${H}/web/domain`]: 'www.example.com, api.example.com',
      [`${H}/web/url_reg`]: '^/api/',
      [`${H}/web/sslpass`]: '1',
      [`${H}/web/options`]: '{"balance":"leastconn","healthPath":"/hc"}',
      [`${H}/web/upstreams/w1`]: '[::1]:8443',
      [`${H}/web/upstreams/w2`]: '{"addr":"10.0.0.2:8443","weight":10,"state":"drain"}',
      [`${T}/db/ports`]: '5432,5433',
      [`${T}/db/options`]: '{"maxconn":50}',
      [`${T}/db/upstreams/d1`]: '10.0.1.1:5432',
      [`${H}/empty/upstreams`]: 'not a contract key (no id)',
    }),
    P + '/',
    '42',
  );
  assert.deepEqual(rejections, []);
  assert.deepEqual(ignored, [`${H}/empty/upstreams`]);
  assert.equal(registry.revision, '42');
  assert.deepEqual([...registry.http.keys()], ['default', 'web']);
  const web = registry.http.get('web') as HttpService;
  assert.deepEqual(web.domains, ['api.example.com', 'www.example.com']);
  assert.equal(web.urlReg, '^/api/');
  assert.equal(web.sslPassthrough, true);
  assert.deepEqual(web.options, { ...DEFAULT_OPTIONS, balance: 'leastconn', healthPath: '/hc' });
  assert.deepEqual(web.upstreams.get('w1'), { id: 'w1', addr: '::1', port: 8443, weight: 1, state: 'ready' });
  assert.deepEqual(web.upstreams.get('w2'), { id: 'w2', addr: '10.0.0.2', port: 8443, weight: 10, state: 'drain' });
  const def = registry.http.get('default') as HttpService;
  assert.equal(def.sslPassthrough, false);
  assert.equal(def.urlReg, null);
  assert.deepEqual(def.options, DEFAULT_OPTIONS);
  const db = registry.tcp.get('db') as TcpService;
  assert.deepEqual(db.ports, [5432, 5433]);
  assert.equal(db.options.maxconn, 50);
  assert.deepEqual([...db.upstreams.keys()], ['d1']);
});

test('parseRegistry: a bad entry rejects that entry only', () => {
  const { registry, rejections } = parseRegistry(
    kv({
      [`${H}/web/domain`]: 'ok.example ехаmple.com',
      [`${H}/web/url_reg`]: '^/a\n^/b',
      [`${H}/web/options`]: '{"balance":"nope"}',
      [`${H}/web/sslpass`]: 'x'.repeat(5000),
      [`${H}/web/upstreams/good`]: '10.0.0.1:80',
      [`${H}/web/upstreams/bad`]: '10.0.0.2:80;x',
      [`${H}/web/upstreams/bad id`]: '10.0.0.3:80',
      [`${H}/bad name/upstreams/a`]: '10.0.0.4:80',
      [`${T}/t/ports`]: '80;81',
      [`${T}/t/upstreams/u`]: '10.0.0.5:80',
    }),
    P,
    '7',
  );
  const web = registry.http.get('web') as HttpService;
  assert.deepEqual([...web.upstreams.keys()], ['good']);
  assert.deepEqual(web.domains, [], 'bad domain value drops the domain key');
  assert.equal(web.urlReg, null);
  assert.equal(web.options, DEFAULT_OPTIONS, 'bad options → defaults');
  assert.equal(web.sslPassthrough, false, 'oversized sslpass value rejected → absent');
  assert.equal(registry.http.has('bad name'), false);
  const t = registry.tcp.get('t') as TcpService;
  assert.deepEqual(t.ports, []);
  assert.equal(t.upstreams.size, 1);
  assert.deepEqual(
    rejections.map((r) => r.key),
    [
      `${H}/bad name/upstreams/a`,
      `${H}/web/domain`,
      `${H}/web/options`,
      `${H}/web/sslpass`,
      `${H}/web/upstreams/bad`,
      `${H}/web/upstreams/bad id`,
      `${H}/web/url_reg`,
      `${T}/t/ports`,
    ],
  );
  assert.match(rejections.find((r) => r.key.endsWith('/options'))!.reason, /using defaults/);
});

test('parseRegistry: hostile values never reach the model, for every key kind', () => {
  const keys = [
    (s: string) => `${H}/${s}/domain`,
    (s: string) => `${H}/${s}/url_reg`,
    (s: string) => `${H}/${s}/options`,
    (s: string) => `${H}/${s}/upstreams/u1`,
    (s: string) => `${T}/${s}/ports`,
    (s: string) => `${T}/${s}/options`,
    (s: string) => `${T}/${s}/upstreams/u1`,
  ];
  const hostileForKind: Array<[string, string]> = [
    ...HOSTILE,
    ['domain newline', 'a.example\nb.example'],
    ['domain cyrillic', 'ехаmple.com'],
    ['domain fullwidth', 'ｅxample.com'],
    ['options injection', '{"healthPath":"/h\\n    http-request deny"}'],
    ['url newline', '^/a\n^/b'],
    ['url NUL', '^/a\0'],
  ];
  let n = 0;
  for (const [name, value] of hostileForKind) {
    for (const mk of keys) {
      const svc = `s${n++}`;
      const key = mk(svc);
      const { registry, rejections } = parseRegistry([{ key, value }], P, '1');
      const svcModel = registry.http.get(svc) ?? registry.tcp.get(svc);
      assert.ok(svcModel, `${name} @ ${key}: service still exists`);
      // Nothing of a hostile value in the config-bound fields (url_reg, pattern-file-bound, is checked below).
      const json = JSON.stringify(svcModel, (k, v: unknown) => (k === 'urlReg' ? undefined : v instanceof Map ? [...v.values()] : v));
      assert.ok(!/[ ;#\\]|\\u00|\\[nrt]/.test(json.replace(/"kind":"http"|"kind":"tcp"/, '')), `${name} @ ${key}: ${json}`);
      assert.equal(svcModel.upstreams.size, 0, `${name} @ ${key}`);
      if (svcModel.kind === 'http') {
        assert.deepEqual(svcModel.domains, [], `${name} @ ${key}`);
        // url_reg is the one free-text field (`;`, `#`, space, `\` are regex syntax there), but never with line breaks/controls.
        if (svcModel.urlReg !== null) assert.ok(parseUrlReg(svcModel.urlReg).ok && !/[\p{Cc}\u2028\u2029]/u.test(svcModel.urlReg), name);
      } else assert.deepEqual(svcModel.ports, [], `${name} @ ${key}`);
      assert.deepEqual(svcModel.options, DEFAULT_OPTIONS, `${name} @ ${key}`);
      const rejected = rejections.some((r) => r.key === key);
      // A hostile url_reg such as ";" alone would be fine regex text; every value here is refused somewhere.
      assert.ok(rejected || (key.endsWith('/url_reg') && parseUrlReg(value).ok), `${name} @ ${key} not rejected`);
    }
  }
});

test('parseRegistry: service exists without valid upstreams; unknown keys ignored', () => {
  const { registry, rejections, ignored } = parseRegistry(
    kv({
      [`${H}/lonely/domain`]: 'lonely.example',
      [`${H}/web/upstreams/u1`]: 'garbage',
      [`${P}/other/thing`]: 'x',
      [`${P}/http-services/web/unknown`]: 'x',
      [`${P}/tcp-services/t/domain`]: 'tcp has no domain key',
      [`${P}/http-services/web/upstreams/a/b`]: 'too deep',
      [`${P}-other/http-services/x/domain`]: 'outside the prefix',
    }),
    P,
    '1',
  );
  assert.deepEqual([...registry.http.keys()], ['lonely', 'web']);
  assert.equal(registry.http.get('web')!.upstreams.size, 0);
  assert.equal(registry.tcp.size, 0);
  assert.equal(rejections.length, 1);
  assert.equal(ignored.length, 5);
});

test('parseRegistry: duplicate addr:port keeps the lexicographically first id', () => {
  const { registry, rejections } = parseRegistry(
    kv({
      [`${H}/web/upstreams/b`]: '10.0.0.1:80',
      [`${H}/web/upstreams/a`]: '{"addr":"10.0.0.1:80","weight":3}',
      [`${H}/web/upstreams/c`]: '[::1]:80',
      [`${H}/web/upstreams/d`]: '[0:0::1]:80',
      [`${H}/other/upstreams/z`]: '10.0.0.1:80',
    }),
    P,
    '1',
  );
  assert.deepEqual([...registry.http.get('web')!.upstreams.keys()], ['a', 'c']);
  assert.equal(registry.http.get('other')!.upstreams.size, 1, 'other services may share an address');
  assert.deepEqual(
    rejections.map((r) => [r.key, /duplicate address/.test(r.reason)]),
    [
      [`${H}/web/upstreams/b`, true],
      [`${H}/web/upstreams/d`, true],
    ],
  );
});

test('parseRegistry: cross-service claims without create_revision: the service name breaks the tie, the loser keeps its other values', () => {
  const { registry, rejections } = parseRegistry(
    kv({
      [`${H}/b/domain`]: 'shared.example,b.example',
      [`${H}/a/domain`]: 'shared.example',
      [`${T}/y/ports`]: '9000,9001',
      [`${T}/x/ports`]: '9000',
    }),
    P,
    '1',
  );
  assert.deepEqual(registry.http.get('a')!.domains, ['shared.example']);
  assert.deepEqual(registry.http.get('b')!.domains, ['b.example']);
  assert.deepEqual((registry.tcp.get('x') as TcpService).ports, [9000]);
  assert.deepEqual((registry.tcp.get('y') as TcpService).ports, [9001]);
  assert.deepEqual(
    rejections.map((r) => [r.key, r.claimedBy]),
    [
      [`${H}/b/domain`, `${H}/a/domain`],
      [`${T}/y/ports`, `${T}/x/ports`],
    ],
  );
});

test('parseRegistry: deterministic regardless of input order; prefix with trailing slash', () => {
  const pairs = kv({
    [`${H}/b/upstreams/2`]: '10.0.0.2:80',
    [`${H}/a/upstreams/1`]: '10.0.0.1:80',
    [`${H}/a/upstreams/0`]: '10.0.0.1:80',
    [`${H}/c/domain`]: 'x.example',
    [`${H}/b/domain`]: 'x.example',
  });
  const one = parseRegistry(pairs, P, '1');
  const two = parseRegistry([...pairs].reverse(), P + '/', '1');
  const dump = (r: typeof one) => JSON.stringify([r.rejections, [...r.registry.http].map(([k, s]) => [k, s.domains, [...s.upstreams.keys()]])]);
  assert.equal(dump(one), dump(two));
});
