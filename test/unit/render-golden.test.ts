/**
 * Golden files for the rendered haproxy.cfg (test/fixtures/render/<case>.cfg) and its
 * support files (<case>.files.txt). `UPDATE_GOLDEN=1` rewrites them. Every golden must
 * also pass the real `haproxy -c`, with its map/pattern files and (certs case) a
 * self-signed certificate in a temp dir.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { DEFAULT_OPTIONS, type HttpService, type Registry, type TcpService, type Upstream, type ServiceOptions } from '../../src/model.js';
import { defaultSettings, renderConfig, readAppliedSlots, readAppliedStructure, type RenderSettings, type Rendered } from '../../src/render/index.js';
import { validateConfig } from '../../src/reload/index.js';
import { certPaths, prepareCertFiles } from '../../src/certs/default.js';
import { structureHash } from '../../src/model.js';

const FIXTURES = fileURLToPath(new URL('../fixtures/render/', import.meta.url));
/** Fixed paths in the goldens; replaced by a temp dir for `haproxy -c`. */
const STATE = '/var/lib/haproxy-updater';
const CERTS = '/etc/haproxy-updater/certs';

function upstreams(...specs: Array<[string, string, number]>): Map<string, Upstream> {
  return new Map(specs.map(([id, addr, port]) => [id, { id, addr, port, weight: 1, state: 'ready' as const }]));
}
function http(name: string, o: Partial<Omit<HttpService, 'options'>> & { options?: Partial<ServiceOptions> } = {}): HttpService {
  const { options, ...rest } = o;
  return { kind: 'http', name, upstreams: new Map(), domains: [], urlReg: null, sslPassthrough: false, ...rest, options: { ...DEFAULT_OPTIONS, ...options } };
}
function tcp(name: string, ports: number[], options: Partial<ServiceOptions> = {}): TcpService {
  return { kind: 'tcp', name, upstreams: new Map(), ports, options: { ...DEFAULT_OPTIONS, ...options } };
}
function registry(services: Array<HttpService | TcpService>, revision = '7'): Registry {
  return {
    revision,
    http: new Map(services.filter((s): s is HttpService => s.kind === 'http').map((s) => [s.name, s])),
    tcp: new Map(services.filter((s): s is TcpService => s.kind === 'tcp').map((s) => [s.name, s])),
  };
}
const base = (o: Partial<RenderSettings> = {}): RenderSettings => ({ ...defaultSettings(STATE), httpPort: 80, httpsPort: 443, ...o });

interface Case {
  name: string;
  registry: Registry;
  capacity?: Map<string, number>;
  settings: RenderSettings;
  certs?: boolean;
}

const cases: Case[] = [
  { name: 'empty', registry: registry([], '0'), settings: base() },
  {
    name: 'http-services',
    registry: registry([
      http('default', { domains: ['default.docker.local'], upstreams: upstreams(['nodeapp-1', '172.17.8.101', 8000]) }),
      http('nodeapp', {
        domains: ['nodeapp.docker.local', 'www.nodeapp.example'],
        upstreams: upstreams(['nodeapp-1', '172.17.8.101', 8000], ['nodeapp-2', '172.17.8.102', 8000]),
        options: { healthPath: '/health', maxconn: 200, balance: 'leastconn' },
      }),
      http('api', { domains: ['api.example'], urlReg: '^/api/v[0-9]+/' }),
      http('static', { domains: ['static.example'], urlReg: '\\.(css|js|png)$', options: { balance: 'source', minSlots: 2 } }),
    ]),
    capacity: new Map([['http-nodeapp', 16]]),
    settings: base({ logTarget: 'stdout' }),
  },
  {
    name: 'tls-passthrough',
    registry: registry([
      http('secure', { domains: ['secure.example', 'login.example'], sslPassthrough: true, options: { healthPath: '/healthz' } }),
      http('web', { domains: ['web.example'] }),
    ]),
    settings: base({ logTarget: '/dev/log' }),
  },
  {
    name: 'tls-passthrough-default',
    registry: registry([http('default', { domains: ['any.example'], sslPassthrough: true })]),
    settings: base(),
  },
  {
    name: 'certs-and-passthrough',
    registry: registry([
      http('default', { domains: ['default.example'] }),
      http('shop', { domains: ['shop.example'], urlReg: '^/checkout', options: { healthPath: '/ping?full=1' } }),
      http('vault', { domains: ['vault.example'], sslPassthrough: true }),
    ]),
    settings: base({ certsDir: CERTS, hasCerts: true, statsPort: 8404, statsPassword: 'helloworld', logTarget: '127.0.0.1:514', maxconn: 2000 }),
    certs: true,
  },
  {
    name: 'tcp-services',
    registry: registry([
      tcp('postgres', [5432, 5433], { balance: 'first', maxconn: 50 }),
      tcp('redis', [6379]),
      // 80 is the HTTP port and 6379 belongs to redis (earlier by name): neither is bound again.
      tcp('zz-clash', [80, 6379, 7000]),
      tcp('zz-nothing-left', [6379]),
    ]),
    settings: base({ bindAddress: '::', checkInterMs: 1000 }),
  },
  {
    name: 'stats-without-password',
    registry: registry([http('web', { domains: ['web.example'] })]),
    settings: base({ statsPort: 8404, bindAddress: '10.0.0.5' }),
  },
];

function serialiseFiles(files: Map<string, string>): string {
  return [...files.keys()]
    .sort()
    .map((f) => `==> ${f} <==\n${files.get(f)}`)
    .join('');
}

/** Writes the rendered config and its files under `dir` (paths rebased) and runs `haproxy -c`. */
async function haproxyCheck(r: Rendered, dir: string, certs: boolean): Promise<void> {
  const rebase = (s: string) => s.replaceAll(STATE, path.join(dir, 'state')).replaceAll(CERTS, path.join(dir, 'certs'));
  for (const [file, content] of r.files) {
    await mkdir(path.dirname(rebase(file)), { recursive: true });
    await writeFile(rebase(file), content);
  }
  await mkdir(path.join(dir, 'state'), { recursive: true });
  // The files `run --certs` prepares before HAProxy starts: the default certificate and the crt-list naming it.
  if (certs) await prepareCertFiles(certPaths(path.join(dir, 'state'), path.join(dir, 'state', 'certs.crtlist')));
  const cfg = path.join(dir, 'haproxy.cfg');
  await writeFile(cfg, rebase(r.config));
  // HAPROXY_BIN: the version matrix checks the goldens with every branch's `haproxy -c`.
  const { warnings } = await validateConfig(cfg, { haproxyBin: process.env.HAPROXY_BIN || 'haproxy' });
  // The only acceptable warning: no state file yet (the first start has none).
  assert.deepEqual(warnings.filter((w) => !/server state file/.test(w)), [], 'haproxy -c warnings');
}

for (const c of cases) {
  test(`golden: ${c.name}`, async (t) => {
    const rendered = renderConfig({ registry: c.registry, capacity: c.capacity ?? new Map(), settings: c.settings });
    const cfgFile = path.join(FIXTURES, `${c.name}.cfg`);
    const filesFile = path.join(FIXTURES, `${c.name}.files.txt`);
    const files = serialiseFiles(rendered.files);
    if (process.env.UPDATE_GOLDEN === '1') {
      await mkdir(FIXTURES, { recursive: true });
      await writeFile(cfgFile, rendered.config);
      await writeFile(filesFile, files);
      t.diagnostic(`updated ${cfgFile}`);
    }
    assert.equal(rendered.config, await readFile(cfgFile, 'utf8'), `${c.name}.cfg differs (UPDATE_GOLDEN=1 to accept)`);
    assert.equal(files, await readFile(filesFile, 'utf8'), `${c.name}.files.txt differs (UPDATE_GOLDEN=1 to accept)`);

    // Structure lines and slot counts read back as rendered.
    const structure = readAppliedStructure(rendered.config);
    const slots = readAppliedSlots(rendered.config);
    const services = [...c.registry.http.values(), ...c.registry.tcp.values()];
    assert.equal(structure.size, services.length);
    for (const svc of services) {
      const be = svc.kind === 'tcp' ? `tcp-${svc.name}` : `${svc.sslPassthrough ? 'tls' : 'http'}-${svc.name}`;
      assert.equal(structure.get(be), structureHash(svc), be);
      assert.ok((slots.get(be) ?? 0) >= 1, `${be} slots`);
    }

    const dir = await mkdtemp(path.join(os.tmpdir(), 'hu-golden-'));
    try {
      await haproxyCheck(rendered, dir, c.certs ?? false);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
}

test('golden cases cover what the seed served', () => {
  const text = cases.map((c) => renderConfig({ registry: c.registry, capacity: c.capacity ?? new Map(), settings: c.settings }).config).join('\n');
  for (const needle of [
    'stats uri /admin?stats',
    'http-request use-service prometheus-exporter if { path /metrics }',
    'default_backend http-default',
    'default_backend internal-no-route',
    'url_reg -f',
    'accept-proxy ssl crt',
    'send-proxy-v2',
    'req.ssl_sni',
    'load-server-state-from-file global',
    'expose-fd listeners',
    '"http_status":%ST',
  ]) {
    assert.ok(text.includes(needle), needle);
  }
  assert.ok(!/^\s*daemon\b/m.test(text), 'no daemon keyword (master-worker)');
});
