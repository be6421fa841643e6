/**
 * Config injection (notes §8): registry values are validated by src/watch, but render must
 * not trust that. Registries are built directly here, bypassing the watcher, with the
 * values that produced a *valid* injected config in the notes, and more. Each one must
 * either make renderConfig throw InvalidArgumentError or never appear in the output.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DEFAULT_OPTIONS, type HttpService, type Registry, type TcpService, type ServiceOptions, type Upstream } from '../../src/model.js';
import { InvalidArgumentError } from '../../src/errors.js';
import { defaultSettings, renderConfig, renderHostsMap, renderSniMap, type RenderSettings, type Rendered } from '../../src/render/index.js';
import { assertToken } from '../../src/render/safe.js';

const settings = (o: Partial<RenderSettings> = {}): RenderSettings => ({ ...defaultSettings('/var/lib/hu'), ...o });

function http(name: string, o: Partial<Omit<HttpService, 'options'>> & { options?: Partial<ServiceOptions> } = {}): HttpService {
  const { options, ...rest } = o;
  return { kind: 'http', name, upstreams: new Map(), domains: ['ok.example'], urlReg: null, sslPassthrough: false, ...rest, options: { ...DEFAULT_OPTIONS, ...options } };
}
function tcp(name: string, ports: number[]): TcpService {
  return { kind: 'tcp', name, upstreams: new Map(), ports, options: DEFAULT_OPTIONS };
}
function reg(http_: HttpService[], tcp_: TcpService[] = [], revision = '1'): Registry {
  return { revision, http: new Map(http_.map((s) => [s.name, s])), tcp: new Map(tcp_.map((s) => [s.name, s])) };
}
function render(r: Registry, s: RenderSettings = settings(), capacity = new Map<string, number>()): Rendered {
  return renderConfig({ registry: r, capacity, settings: s });
}
function refused(fn: () => unknown, what: string): void {
  assert.throws(fn, (err: unknown) => err instanceof InvalidArgumentError, what);
}

const EVIL_NAME = 'web\n    http-request deny deny_status 403\n#';
const EVIL_ADDR = '127.0.0.1:8080 # check disabled';
/** Fragments that, in the output, would mean an injection got through. */
const MARKERS = ['deny_status', 'http-request deny', '# check disabled', 'set server', 'evil'];

function assertClean(r: Rendered): void {
  const all = [r.config, ...r.files.keys(), ...r.files.values()].join('\n');
  for (const m of MARKERS) assert.ok(!all.includes(m), `output contains ${JSON.stringify(m)}`);
}

test('the notes §8 service name is refused (as map key, backend, frontend)', () => {
  refused(() => render(reg([http(EVIL_NAME)])), 'http service name');
  refused(() => render(reg([], [tcp(EVIL_NAME, [9000])])), 'tcp service name');
  refused(() => renderHostsMap(reg([http(EVIL_NAME)])), 'hosts map');
  refused(() => renderSniMap(reg([http(EVIL_NAME, { sslPassthrough: true })])), 'sni map');
  // Map key ≠ service name must not help either.
  const r = reg([]);
  (r.http as Map<string, HttpService>).set('web', http(EVIL_NAME));
  refused(() => render(r), 'name under a clean key');
});

test('upstream addresses never reach haproxy.cfg (slots are filled at runtime)', () => {
  const up: Upstream = { id: 'u1', addr: EVIL_ADDR, port: 8080, weight: 1, state: 'ready' };
  const evilId: Upstream = { id: 'evil\n    http-request deny', addr: '10.0.0.1', port: 1, weight: 1, state: 'ready' };
  const r = render(reg([http('web', { upstreams: new Map([['u1', up], ['x', evilId]]) })]));
  assert.ok(!r.config.includes('127.0.0.1:8080'));
  assert.ok(!r.config.includes('# check disabled'));
  assertClean(r);
  assert.match(r.config, /server-template s 1-4 slot\.invalid:1 check disabled init-addr last,0\.0\.0\.0\n/);
});

test('domains with ; newline space # or upper case are refused', () => {
  for (const d of [
    'a.example;set server b/s3 state maint',
    'a.example\nset server b/s3 state maint',
    'a.example b',
    'a.example#x',
    'A.Example',
    'a.example\\x',
    "a.example'",
    '',
    'a..example',
    '-a.example',
  ]) {
    refused(() => render(reg([http('web', { domains: [d] })])), `domain ${JSON.stringify(d)}`);
    refused(() => renderHostsMap(reg([http('web', { domains: [d] })])), `hosts map ${JSON.stringify(d)}`);
    refused(() => renderSniMap(reg([http('web', { domains: [d], sslPassthrough: true })])), `sni map ${JSON.stringify(d)}`);
  }
});

test('url_reg text goes to a pattern file only, never onto a config line', () => {
  const re = '^/evil (x) ; http-request deny';
  const r = render(reg([http('web', { urlReg: re })]));
  assert.ok(!r.config.includes(re));
  assert.ok(!r.config.includes('deny'));
  assert.equal(r.files.get('/var/lib/hu/url_reg/web.pat'), `${re}\n`);
  // A leading '#' or blank would be a comment / be stripped in a pattern file: kept as a regex.
  assert.equal(render(reg([http('web', { urlReg: '#frag' })])).files.get('/var/lib/hu/url_reg/web.pat'), '(?:)#frag\n');
  // More than one line would be several patterns.
  for (const bad of ['^/a\n^/b', '^/a\r', 'x\u0000', '']) refused(() => render(reg([http('web', { urlReg: bad })])), JSON.stringify(bad));
});

test('health path, balance, maxconn, capacity, ports and revision are re-checked', () => {
  for (const p of ['/h\n    http-request deny', '/h#x', '/h x', 'h', "/h'", '/h"', '/h;x', '/h\\x']) {
    refused(() => render(reg([http('web', { options: { healthPath: p } })])), `healthPath ${JSON.stringify(p)}`);
  }
  refused(() => render(reg([http('web', { options: { balance: 'roundrobin\n    http-request deny' as never } })])), 'balance');
  refused(() => render(reg([http('web', { options: { maxconn: 1.5 } })])), 'maxconn');
  for (const cap of [0, -1, 1.5, Number.NaN, 1e6]) refused(() => render(reg([http('web')]), settings(), new Map([['http-web', cap]])), `capacity ${cap}`);
  for (const port of [0, 65536, 1.5, Number.NaN]) refused(() => render(reg([], [tcp('db', [port])])), `tcp port ${port}`);
  refused(() => render(reg([], [], '1\n    http-request deny')), 'revision');
});

test('settings are re-checked: paths, bind address, ports, stats credentials, log target', () => {
  const cases: Array<[string, Partial<RenderSettings>]> = [
    ['stateDir with space', { stateDir: '/var/lib/h u' }],
    ['relative hostsMap', { hostsMap: 'hosts.map' }],
    ['hostsMap with newline', { hostsMap: '/var/lib/hu/hosts.map\n    http-request deny' }],
    ['sniMap with #', { sniMap: '/var/lib/hu/sni#.map' }],
    ['adminSocket not normalised', { adminSocket: '/var/lib/hu/../admin.sock' }],
    ['serverStateFile with ;', { serverStateFile: '/var/lib/hu/state;x' }],
    ['urlRegDir with quote', { urlRegDir: "/var/lib/hu/u'" }],
    ['bindAddress with port', { bindAddress: '0.0.0.0:80' }],
    ['bindAddress with words', { bindAddress: '0.0.0.0 ssl crt /x' }],
    ['bindAddress host name', { bindAddress: 'localhost' }],
    ['httpPort 0', { httpPort: 0 }],
    ['httpsPort 70000 with certs', { httpsPort: 70000, hasCerts: true, certsDir: '/etc/certs' }],
    ['hasCerts without certsDir', { hasCerts: true, certsDir: null }],
    ['certsDir with space', { hasCerts: true, certsDir: '/etc/my certs' }],
    ['stats password with space', { statsPort: 8404, statsPassword: 'hello world' }],
    ['stats password with #', { statsPort: 8404, statsPassword: 'helloworld#' }],
    ['stats password with newline', { statsPort: 8404, statsPassword: 'helloworld\n    http-request deny' }],
    ['stats password too short', { statsPort: 8404, statsPassword: 'short' }],
    ['stats user with colon', { statsPort: 8404, statsPassword: 'helloworld', statsUser: 'ad:min' }],
    ['stats user with space', { statsPort: 8404, statsPassword: 'helloworld', statsUser: 'ad min' }],
    ['stats port = http port', { statsPort: 80, statsPassword: 'helloworld' }],
    ['log target with newline', { logTarget: '/dev/log\n    http-request deny' }],
    ['log target host name', { logTarget: 'syslog:514' }],
    ['maxconn 0', { maxconn: 0 }],
    ['checkInterMs 1', { checkInterMs: 1 }],
    ['hardStopAfterMs below 1 s', { hardStopAfterMs: 10 }],
    ['mworkerMaxReloads 0', { mworkerMaxReloads: 0 }],
  ];
  for (const [what, o] of cases) refused(() => render(reg([http('web')]), settings(o)), what);
});

test('the stats password is never put in an error message', () => {
  try {
    render(reg([]), settings({ statsPort: 8404, statsPassword: 'secret pass' }));
    assert.fail('should throw');
  } catch (err) {
    assert.ok(err instanceof InvalidArgumentError);
    assert.ok(!err.message.includes('secret pass'));
    assert.ok(!JSON.stringify(err.context).includes('secret pass'));
  }
});

test('the template filter refuses any unsafe word (defence behind the checks)', () => {
  for (const v of ['a b', 'a\nb', 'a#', 'a;b', 'a\\b', "a'", 'a"', 'a`', '', 'a\tb', 'a\u0000', 'a\u007f']) {
    assert.throws(() => assertToken(v), InvalidArgumentError, JSON.stringify(v));
  }
  assert.throws(() => assertToken({}), InvalidArgumentError);
  assert.throws(() => assertToken(undefined), InvalidArgumentError);
  assert.equal(assertToken(443), '443');
  assert.equal(assertToken('unix@/var/lib/hu/x.sock'), 'unix@/var/lib/hu/x.sock');
});

test('a clean registry renders, and no line of it was added by a value', () => {
  const r = render(
    reg(
      [http('default', { domains: ['d.example'] }), http('web', { domains: ['a.example', 'b.example'], urlReg: '^/w', options: { healthPath: '/health?x=1' } })],
      [tcp('db', [5432])],
    ),
    settings({ statsPort: 8404, statsPassword: 'helloworld', logTarget: 'stdout' }),
  );
  assertClean(r);
  // Every non-comment line starts with a known keyword: nothing was smuggled in as a line.
  const keywords =
    /^(global|defaults|frontend|backend|listen|master-worker|maxconn|stats|server-state-file|log|log-format|tune\.|ssl-default|mode|option|retries|retry-on|timeout|load-server-state-from-file|default-server|hard-stop-after|mworker-max-reloads|bind|http-request|use_backend|default_backend|tcp-request|server|server-template|balance|http-check|userlist|user)\b/;
  for (const line of r.config.split('\n')) {
    const t = line.trim();
    if (t === '' || t.startsWith('#')) continue;
    assert.match(t, keywords, `unexpected line ${JSON.stringify(line)}`);
  }
});
