/**
 * The reload procedure with a fake master and guard (real `haproxy -c`, real files):
 * ordering, what is left on disk in each outcome, rollback, guard release in every
 * outcome. Plus atomicWrite, readApplied*, defaultSlots and ReloadLimiter.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { DEFAULT_OPTIONS, type HttpService, type Registry } from '../../src/model.js';
import { ConfigInvalidError, GuardError, ReloadFailedError, ReloadTimeoutError, ReplyParseError } from '../../src/errors.js';
import {
  tcpListeners,
  defaultSettings,
  defaultSlots,
  readAppliedSlots,
  readAppliedStructure,
  renderConfig,
  type Rendered,
} from '../../src/render/index.js';
import {
  assertNewPortsFree,
  atomicWrite,
  Reloader,
  ReloadLimiter,
  validateConfig,
  writeRendered,
  type MasterLike,
  type ReloadGuard,
} from '../../src/reload/index.js';

const DUMP = '1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port\n3 http-web 1 s1 127.0.0.1 2 4 1 1 5 6 3 4 6 0 0 0 slot.invalid 8080 - 0 0 - - 0\n';

function http(name: string, domains: string[], urlReg: string | null = null): HttpService {
  return { kind: 'http', name, upstreams: new Map(), domains, urlReg, sslPassthrough: false, options: DEFAULT_OPTIONS };
}
function registry(...svcs: HttpService[]): Registry {
  return { revision: '3', http: new Map(svcs.map((s) => [s.name, s])), tcp: new Map() };
}

async function setup(t: { after(fn: () => Promise<void>): void }) {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'hu-reload-unit-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const settings = { ...defaultSettings(dir), httpPort: 18080 };
  const render = (reg: Registry): Rendered => renderConfig({ registry: reg, capacity: new Map(), settings });
  const cfgPath = path.join(dir, 'haproxy.cfg');
  // The running state: config v1 with web.
  const v1 = render(registry(http('web', ['web.example'])));
  await writeRendered(v1, cfgPath);
  return { dir, settings, render, cfgPath, v1 };
}

type Outcome = 'ok' | 'fail' | 'timeout';
class FakeMaster implements MasterLike {
  reloads = 0;
  failed = 0;
  pid = 100;
  calls: Array<{ timeoutMs?: number }> = [];
  active = 0;
  maxActive = 0;
  constructor(readonly outcomes: Outcome[] = [], readonly delayMs = 0) {}
  async reload(opts?: { timeoutMs?: number }): Promise<unknown> {
    this.calls.push(opts ?? {});
    this.active++;
    this.maxActive = Math.max(this.maxActive, this.active);
    await new Promise((r) => setTimeout(r, this.delayMs));
    this.active--;
    const outcome = this.outcomes.shift() ?? 'ok';
    if (outcome === 'timeout') throw new ReloadTimeoutError('not confirmed');
    this.reloads++;
    if (outcome === 'fail') {
      this.failed++;
      throw new ReloadFailedError('failed: 1');
    }
    this.failed = 0;
    this.pid++;
    return {};
  }
  async showProc() {
    return { reloads: this.reloads, failed: this.failed, workers: [{ pid: this.pid }] };
  }
}

class FakeGuard implements ReloadGuard {
  readonly kind = 'iptables' as const;
  events: string[] = [];
  constructor(readonly failRelease = false) {}
  async init() {}
  async engage(ports: number[]) {
    this.events.push(`engage ${ports.join(',')}`);
  }
  async release() {
    this.events.push('release');
    if (this.failRelease) throw new GuardError('cannot delete rule');
  }
}

function reloader(o: { cfgPath: string; dir: string; master: MasterLike; guard: ReloadGuard; dump?: () => Promise<string> }) {
  return new Reloader({
    master: o.master,
    runtime: o.dump ?? (async () => DUMP),
    guard: o.guard,
    cfgPath: o.cfgPath,
    serverStateFile: path.join(o.dir, 'server-state'),
    guardPorts: () => [18080, 18443],
    reloadTimeoutMs: 1234,
  });
}

test('reload: state dumped, config replaced with .prev kept, guard engaged then released, master reloaded', async (t) => {
  const { dir, render, cfgPath, v1 } = await setup(t);
  // The master takes 120 ms to confirm: the reported duration covers the whole procedure.
  const master = new FakeMaster([], 120);
  const guard = new FakeGuard();
  const v2 = render(registry(http('api', ['api.example'], '^/api'), http('web', ['web.example'])));
  const res = await reloader({ cfgPath, dir, master, guard }).reload(v2, ['service-added:http-api']);
  assert.equal(res.ok, true);
  assert.deepEqual(res.reasons, ['service-added:http-api']);
  // (110: a timer may fire a millisecond early)
  assert.ok(res.durationMs >= 110, `durationMs ${res.durationMs} must include the 120 ms master reload`);
  assert.equal(await readFile(path.join(dir, 'server-state'), 'utf8'), DUMP);
  assert.equal(await readFile(cfgPath, 'utf8'), v2.config);
  assert.equal(await readFile(`${cfgPath}.prev`, 'utf8'), v1.config);
  assert.equal(await readFile(path.join(dir, 'url_reg', 'api.pat'), 'utf8'), '^/api\n');
  assert.equal(await readFile(path.join(dir, 'hosts.map'), 'utf8'), 'api.example http-api\nweb.example http-web\n');
  assert.deepEqual(guard.events, ['engage 18080,18443', 'release']);
  assert.deepEqual(master.calls, [{ timeoutMs: 1234 }]);
  // No temp files left behind.
  assert.deepEqual((await readdir(dir)).filter((f) => f.startsWith('.')), []);
});

test('reload: a config haproxy -c refuses changes nothing (config, maps) and never touches guard or master', async (t) => {
  const { dir, render, cfgPath, v1 } = await setup(t);
  const master = new FakeMaster();
  const guard = new FakeGuard();
  const bad = render(registry(http('api', ['api.example'], '^/api'), http('web', ['web.example', 'www.example'])));
  bad.config += '\nbackend broken\n    bogus-keyword\n';
  const hostsBefore = await readFile(path.join(dir, 'hosts.map'), 'utf8');
  await assert.rejects(reloader({ cfgPath, dir, master, guard }).reload(bad, ['x']), (e: unknown) => {
    assert.ok(e instanceof ConfigInvalidError);
    assert.match(e.message, /bogus-keyword/);
    assert.ok(Array.isArray(e.context.alerts) && (e.context.alerts as string[]).length > 0);
    return true;
  });
  assert.equal(await readFile(cfgPath, 'utf8'), v1.config);
  assert.equal(await readFile(path.join(dir, 'hosts.map'), 'utf8'), hostsBefore);
  await assert.rejects(stat(path.join(dir, 'url_reg', 'api.pat')), /ENOENT/);
  assert.deepEqual(guard.events, []);
  assert.equal(master.calls.length, 0);
  assert.deepEqual((await readdir(dir)).filter((f) => f.startsWith('.')), []);
});

test('reload: a failed reload is rolled back (files restored, reloaded again), guard released each time', async (t) => {
  for (const first of ['fail', 'timeout'] as const) {
    const { dir, render, cfgPath, v1 } = await setup(t);
    const master = new FakeMaster([first, 'ok']);
    const guard = new FakeGuard();
    const v2 = render(registry(http('web', ['web.example', 'new.example'])));
    await assert.rejects(reloader({ cfgPath, dir, master, guard }).reload(v2, ['r']), (e: unknown) => {
      assert.ok(e instanceof ReloadFailedError, String(e));
      assert.equal(e.context.rolledBack, true);
      return true;
    });
    assert.equal(await readFile(cfgPath, 'utf8'), v1.config, first);
    assert.equal(await readFile(path.join(dir, 'hosts.map'), 'utf8'), 'web.example http-web\n');
    assert.equal(master.calls.length, 2);
    assert.deepEqual(guard.events, ['engage 18080,18443', 'release', 'engage 18080,18443', 'release']);
  }
});

test('reload: rollback failing too is reported as not rolled back', async (t) => {
  const { dir, render, cfgPath } = await setup(t);
  const master = new FakeMaster(['fail', 'fail']);
  const guard = new FakeGuard();
  const v2 = render(registry(http('web', ['web.example', 'new.example'])));
  await assert.rejects(reloader({ cfgPath, dir, master, guard }).reload(v2, ['r']), (e: unknown) => e instanceof ReloadFailedError && e.context.rolledBack === false);
  assert.equal(guard.events.filter((e) => e === 'release').length, 2);
});

test('reload: a guard that cannot be released is an error even when the reload worked', async (t) => {
  const { dir, render, cfgPath } = await setup(t);
  const v2 = render(registry(http('web', ['web.example'])));
  await assert.rejects(reloader({ cfgPath, dir, master: new FakeMaster(), guard: new FakeGuard(true) }).reload(v2, ['r']), GuardError);
});

test('reload: a guard that cannot be engaged puts the files back and never reloads', async (t) => {
  const { dir, render, cfgPath, v1 } = await setup(t);
  const master = new FakeMaster();
  const guard = new FakeGuard();
  guard.engage = async () => {
    throw new GuardError('iptables: no permission');
  };
  const v2 = render(registry(http('web', ['web.example', 'b.example'])));
  await assert.rejects(reloader({ cfgPath, dir, master, guard }).reload(v2, ['r']), GuardError);
  assert.equal(await readFile(cfgPath, 'utf8'), v1.config);
  assert.equal(await readFile(path.join(dir, 'hosts.map'), 'utf8'), 'web.example http-web\n');
  assert.equal(master.calls.length, 0);
  assert.deepEqual(guard.events, ['release']);
});

test('reload: no state dump, no change (a reload would lose every runtime slot address)', async (t) => {
  const { dir, render, cfgPath, v1 } = await setup(t);
  const master = new FakeMaster();
  const guard = new FakeGuard();
  const v2 = render(registry(http('web', ['web.example', 'b.example'])));
  const failing = async () => {
    throw new Error('ECONNREFUSED');
  };
  await assert.rejects(reloader({ cfgPath, dir, master, guard, dump: failing }).reload(v2, ['r']), /ECONNREFUSED/);
  await assert.rejects(reloader({ cfgPath, dir, master, guard, dump: async () => 'Unknown command\n' }).reload(v2, ['r']), ReplyParseError);
  assert.equal(await readFile(cfgPath, 'utf8'), v1.config);
  await assert.rejects(stat(path.join(dir, 'server-state')), /ENOENT/);
  assert.equal(master.calls.length, 0);
});

test('reload: calls never overlap; write() validates without reloading', async (t) => {
  const { dir, render, cfgPath } = await setup(t);
  const master = new FakeMaster([], 30);
  const r = reloader({ cfgPath, dir, master, guard: new FakeGuard() });
  const v2 = render(registry(http('web', ['web.example', 'b.example'])));
  const v3 = render(registry(http('web', ['web.example', 'c.example'])));
  await Promise.all([r.reload(v2, ['a']), r.reload(v3, ['b'])]);
  assert.equal(master.maxActive, 1);
  assert.equal(await readFile(cfgPath, 'utf8'), v3.config);
  const v4 = render(registry(http('web', ['d.example'])));
  await r.write(v4);
  assert.equal(master.calls.length, 2);
  assert.equal(await readFile(cfgPath, 'utf8'), v4.config);
  const bad = { ...v4, config: `${v4.config}\n    bogus\n` };
  await assert.rejects(r.write(bad), ConfigInvalidError);
  assert.equal(await readFile(cfgPath, 'utf8'), v4.config);
});

test('validateConfig: missing binary is a ConfigError, not an invalid config', async (t) => {
  const { cfgPath } = await setup(t);
  await validateConfig(cfgPath);
  await assert.rejects(validateConfig(cfgPath, { haproxyBin: '/nonexistent/haproxy' }), (e: unknown) => (e as { code?: string }).code === 'E_CONFIG');
});

test('atomicWrite: content and mode, replaces, no temp file left', async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'hu-atomic-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const f = path.join(dir, 'x.map');
  await atomicWrite(f, 'one\n');
  await atomicWrite(f, 'two\n', 0o600);
  assert.equal(await readFile(f, 'utf8'), 'two\n');
  assert.equal((await stat(f)).mode & 0o777, 0o600);
  assert.deepEqual(await readdir(dir), ['x.map']);
  await assert.rejects(atomicWrite(path.join(dir, 'missing-dir', 'y'), 'z'), /ENOENT/);
});

test('readAppliedStructure/readAppliedSlots read only backend sections', () => {
  const cfg = renderConfig({
    registry: registry(http('a', ['a.example']), http('b', ['b.example'])),
    capacity: new Map([['http-b', 32]]),
    settings: defaultSettings('/var/lib/hu'),
  }).config;
  const s = readAppliedStructure(`# haproxy-updater settings abc\n${cfg}\nfrontend x\n    # structure 0123456789abcdef\n`);
  assert.deepEqual([...s.keys()], ['http-a', 'http-b']);
  assert.deepEqual([...readAppliedSlots(cfg)], [['http-a', 4], ['http-b', 32]]);
  assert.equal(readAppliedStructure('').size, 0);
});

test('defaultSlots: max(minSlots, next power of two)', () => {
  const svc = (n: number, minSlots = 4): HttpService => ({
    ...http('x', []),
    upstreams: new Map(Array.from({ length: n }, (_, i) => [`u${i}`, { id: `u${i}`, addr: '10.0.0.1', port: 1, weight: 1, state: 'ready' as const }])),
    options: { ...DEFAULT_OPTIONS, minSlots },
  });
  assert.equal(defaultSlots(svc(0)), 4);
  assert.equal(defaultSlots(svc(4)), 4);
  assert.equal(defaultSlots(svc(5)), 8);
  assert.equal(defaultSlots(svc(17)), 32);
  assert.equal(defaultSlots(svc(1, 1)), 1);
});

test('ReloadLimiter: min interval between reloads', async () => {
  let now = 10_000;
  const l = new ReloadLimiter({ minIntervalMs: 1000, now: () => now });
  assert.ok(l.canReloadNow());
  assert.equal(l.nextAllowedAt(), 10_000);
  l.record();
  assert.equal(l.nextAllowedAt(), 11_000);
  assert.ok(!l.canReloadNow());
  now = 11_000;
  assert.ok(l.canReloadNow());
  l.record(9_500); // an older record never moves the window back
  assert.equal(l.nextAllowedAt(), 11_000);
  const real = new ReloadLimiter({ minIntervalMs: 30 });
  real.record();
  const t0 = Date.now();
  await real.wait();
  assert.ok(Date.now() - t0 >= 25);
  assert.equal(new ReloadLimiter().nextAllowedAt() <= Date.now(), true);
});

test('writeRendered: first write has no previous; support files created with their directories', async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'hu-write-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const settings = { ...defaultSettings(dir), httpPort: 18080 };
  const r = renderConfig({ registry: registry(http('web', ['w.example'], '^/w')), capacity: new Map(), settings });
  const res = await writeRendered(r, path.join(dir, 'haproxy.cfg'));
  assert.equal(res.hadPrevious, false);
  await assert.rejects(stat(path.join(dir, 'haproxy.cfg.prev')), /ENOENT/);
  assert.equal(await readFile(path.join(dir, 'url_reg', 'web.pat'), 'utf8'), '^/w\n');
  await writeFile(path.join(dir, 'unrelated'), 'x');
});

test('tcpListeners / assertNewPortsFree: only ports the new config adds are probed; EADDRINUSE refuses', async (t) => {
  const cfg = (...binds: string[]) => binds.map((b) => `frontend f\n    bind ${b}\n`).join('');
  assert.deepEqual(tcpListeners(cfg('*:80', '127.0.0.1:81', '[::]:82 v4v6', '[::1]:83', 'unix@/x/y.sock mode 600 accept-proxy')), [
    { host: '0.0.0.0', port: 80 },
    { host: '127.0.0.1', port: 81 },
    { host: '::', port: 82 },
    { host: '::1', port: 83 },
  ]);
  const net = await import('node:net');
  const squatter = net.createServer();
  await new Promise<void>((r) => squatter.listen(0, '127.0.0.1', () => r()));
  t.after(() => new Promise<void>((r) => squatter.close(() => r())));
  const taken = (squatter.address() as { port: number }).port;
  // Already bound by the running config: not probed (HAProxy passes that fd on).
  await assertNewPortsFree(cfg(`127.0.0.1:${taken}`), cfg(`127.0.0.1:${taken}`));
  await assert.rejects(assertNewPortsFree(cfg('127.0.0.1:1'), cfg(`127.0.0.1:${taken}`)), (e: unknown) => e instanceof ConfigInvalidError && e.message.includes(String(taken)));
  await assert.rejects(assertNewPortsFree('', cfg(`*:${taken}`)), ConfigInvalidError);
});

test('configIdentity ignores only the registry revision in the header', async () => {
  const { renderConfig, configIdentity, defaultSettings } = await import('../../src/render/index.js');
  const settings = { ...defaultSettings('/tmp/hu-identity'), httpsPort: null };
  const at = (revision: string) => renderConfig({ registry: { revision, http: new Map(), tcp: new Map() }, capacity: new Map(), settings }).config;
  assert.notEqual(at('5'), at('6'), 'the header names the revision');
  assert.equal(configIdentity(at('5')), configIdentity(at('6')));
  assert.notEqual(configIdentity(at('5')), configIdentity(renderConfig({ registry: { revision: '5', http: new Map(), tcp: new Map() }, capacity: new Map(), settings: { ...settings, httpPort: 8081 } }).config));
});
