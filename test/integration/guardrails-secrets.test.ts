/**
 * Issue 12 items 5-7 against real etcd, the real `haproxy-updater run` and its managed
 * HAProxy: file modes, the environment HAProxy sees (`show env` on the admin socket), the
 * stats port's /metrics behind the stats credentials, a link-local upstream rejected, the
 * first claimant of a domain keeping it across a restart, `render` redacting the password,
 * and stale iptables/ip6tables guard rules removed at start with `--reload-guard none`
 * (inside a network namespace this test creates).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { access, chmod, lstat, readdir, readFile, writeFile } from 'node:fs/promises';
import {
  startEtcd,
  startBackend,
  tempDir,
  removeDir,
  waitFor,
  freePort,
  execFileP,
  startUpdater,
  killHaproxy,
  socketCommand,
  startProcess,
  stopProcess,
  haproxyBin,
  BIN,
  type EtcdHandle,
  type Backend,
  type UpdaterHandle,
} from '../../testkit/index.js';

const P = '/haproxy-discover';
const H = `${P}/http-services`;
const STATS_PASSWORD = `stats-${randomBytes(6).toString('hex')}`;
const ETCD_PASSWORD = `etcd-${randomBytes(6).toString('hex')}`;
const OTHER_SECRET = `other-${randomBytes(6).toString('hex')}`;
/** The updater's environment: secrets HAProxy must not inherit. */
const SECRET_ENV = {
  HAPROXY_UPDATER_STATS_PASSWORD: STATS_PASSWORD,
  HAPROXY_UPDATER_ETCD_PASSWORD: ETCD_PASSWORD,
  SOME_SERVICE_PASSWORD: OTHER_SECRET,
  ETCDCTL_PASSWORD: OTHER_SECRET,
};

let etcd: EtcdHandle;
let stateDir: string;
let updater: UpdaterHandle;
let statsPort: number;
const backends = new Map<string, Backend>();

/** GET on 127.0.0.1 with an optional Host header and basic auth; never throws. */
function get(port: number, o: { host?: string; path?: string; auth?: string } = {}): Promise<{ status: number; body: string }> {
  return new Promise((resolve) => {
    const req = http.request(
      { host: '127.0.0.1', port, path: o.path ?? '/', headers: { host: o.host ?? `127.0.0.1:${port}`, connection: 'close' }, auth: o.auth, agent: false, timeout: 5000 },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
      },
    );
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', () => resolve({ status: 0, body: '' }));
    req.end();
  });
}

const routedTo = async (host: string) => (await get(updater.httpPort, { host })).body.trim();

async function start(): Promise<UpdaterHandle> {
  return startUpdater({
    etcdEndpoint: etcd.endpoint,
    stateDir,
    env: SECRET_ENV,
    extraArgs: ['--stats-port', String(statsPort)],
    ...(updater ? { httpPort: updater.httpPort, httpsPort: updater.httpsPort, listenPort: updater.listenPort } : {}),
  });
}

before(async () => {
  etcd = await startEtcd();
  stateDir = await tempDir('hu-secrets-');
  // A state dir an operator created world-readable: the updater takes the access away.
  await chmod(stateDir, 0o755);
  statsPort = await freePort();
  for (const id of ['web', 'first', 'later']) backends.set(id, await startBackend(id));
  const port = (id: string) => backends.get(id)!.port;
  await etcd.ctl('put', `${H}/web/domain`, 'web.test');
  await etcd.ctl('put', `${H}/web/upstreams/ok`, `127.0.0.1:${port('web')}`);
  // A cloud metadata address registered as an upstream.
  await etcd.ctl('put', `${H}/web/upstreams/meta`, '169.254.169.254:80');
  // The first claimant of shop.test has the name that sorts LAST.
  await etcd.ctl('put', `${H}/zzz-first/domain`, 'shop.test');
  await etcd.ctl('put', `${H}/zzz-first/upstreams/a`, `127.0.0.1:${port('first')}`);
  await etcd.ctl('put', `${H}/aaa-later/upstreams/a`, `127.0.0.1:${port('later')}`);
  updater = await start();
  await waitFor(async () => (await routedTo('web.test')) === 'web', { what: 'web.test routed', timeoutMs: 15_000 });
});

after(async () => {
  await updater?.stop();
  if (stateDir) await killHaproxy(path.join(stateDir, 'master.sock'));
  await Promise.all([...backends.values()].map((b) => b.close()));
  await etcd?.destroy();
  if (stateDir) await removeDir(stateDir);
});

test('the link-local upstream is rejected naming its key and never reaches HAProxy; the valid one serves', async () => {
  const servers = await socketCommand(updater.adminSocket, 'show servers state http-web');
  assert.ok(servers.includes(`127.0.0.1 ${backends.get('web')!.port} `) || servers.includes(' 127.0.0.1 '), servers);
  assert.ok(!servers.includes('169.254.169.254'), `metadata address reached HAProxy:\n${servers}`);
  assert.ok(!(await readFile(path.join(stateDir, 'haproxy.cfg'), 'utf8')).includes('169.254'));
  const metrics = (await updater.get('/metrics')).body;
  const rejected = Number(/^haproxy_updater_registry_rejected_entries (\d+)/m.exec(metrics)?.[1]);
  assert.equal(rejected, 1, 'exactly the link-local entry is rejected');
  // `plan` applies the same rule and prints the rejection with its key and reason.
  const plan = await execFileP(process.execPath, [BIN, 'plan', '--etcd', etcd.endpoint, '--state-dir', stateDir, '--log-level', 'error']);
  assert.match(plan.stdout, /rejected {2}\/haproxy-discover\/http-services\/web\/upstreams\/meta: 169\.254\.169\.254 is link-local/);
});

test('HAProxy runs with a minimal environment: show env on the admin socket reveals no secret', async () => {
  const env = await socketCommand(updater.adminSocket, 'show env');
  assert.match(env, /^PATH=/m, `show env answered: ${env.slice(0, 200)}`);
  for (const secret of [STATS_PASSWORD, ETCD_PASSWORD, OTHER_SECRET]) assert.ok(!env.includes(secret), 'a secret is visible in show env');
  assert.ok(!/^(HAPROXY_UPDATER_|ETCDCTL_|SOME_SERVICE_)/m.test(env), `updater variables leaked:\n${env}`);
});

test('/metrics and the stats page answer 401 without the stats credentials, 200 with them', async () => {
  const auth = `admin:${STATS_PASSWORD}`;
  assert.equal((await get(statsPort, { path: '/metrics' })).status, 401);
  assert.equal((await get(statsPort, { path: '/metrics', auth: 'admin:wrong-password' })).status, 401);
  assert.equal((await get(statsPort, { path: '/admin?stats' })).status, 401);
  const metrics = await get(statsPort, { path: '/metrics', auth });
  assert.equal(metrics.status, 200);
  assert.match(metrics.body, /^haproxy_process_/m);
  assert.equal((await get(statsPort, { path: '/admin?stats', auth })).status, 200);
});

test('render prints the stats password as <redacted>; --out writes it, 0600; a password in argv is warned about', async () => {
  const args = [BIN, 'render', '--etcd', etcd.endpoint, '--state-dir', stateDir, '--stats-port', String(statsPort), '--log-format', 'json'];
  const printed = await execFileP(process.execPath, args, { env: { ...process.env, HAPROXY_UPDATER_STATS_PASSWORD: STATS_PASSWORD } });
  assert.match(printed.stdout, /insecure-password <redacted>$/m);
  assert.ok(!printed.stdout.includes(STATS_PASSWORD));
  const outDir = await tempDir('hu-secrets-out-');
  try {
    const out = path.join(outDir, 'haproxy.cfg');
    const written = await execFileP(process.execPath, [...args, '--out', out, '--stats-password', STATS_PASSWORD]);
    assert.match(written.stdout + written.stderr, /--stats-password on the command line shows in `ps`/);
    assert.ok((await readFile(out, 'utf8')).includes(`insecure-password ${STATS_PASSWORD}`));
    assert.equal((await lstat(out)).mode & 0o777, 0o600);
  } finally {
    await removeDir(outDir);
  }
});

test('the first claimant of a domain keeps it (etcd create_revision), also across an updater restart', async () => {
  assert.equal(await routedTo('shop.test'), 'first');
  // The later claim arrives as a watch event; its service name sorts first.
  await etcd.ctl('put', `${H}/aaa-later/domain`, 'shop.test,later.test');
  await waitFor(async () => (await routedTo('later.test')) === 'later', { what: 'later.test routed (the later claim applied)', timeoutMs: 15_000 });
  assert.equal(await routedTo('shop.test'), 'first');
  const conflicts = async () => Number(/^haproxy_updater_registry_claim_conflicts (\d+)/m.exec((await updater.get('/metrics')).body)?.[1]);
  assert.equal(await conflicts(), 1);
  // The rejection is logged with both keys.
  const logged = updater.proc.output.find((l) => l.includes('registry entry rejected') && l.includes(`"key":"${H}/aaa-later/domain"`));
  assert.ok(logged?.includes(`"claimedBy":"${H}/zzz-first/domain"`), `no rejection line naming both keys in:\n${updater.proc.output.slice(-20).join('\n')}`);
  // Rewriting the first claim's value keeps its create_revision.
  await etcd.ctl('put', `${H}/zzz-first/domain`, 'shop.test,first.test');
  await waitFor(async () => (await routedTo('first.test')) === 'first', { what: 'first.test routed', timeoutMs: 15_000 });
  assert.equal(await routedTo('shop.test'), 'first');

  await updater.stop();
  await killHaproxy(path.join(stateDir, 'master.sock'));
  updater = await start();
  // A fresh HAProxy holds new servers down until their first check: wait for an answer from either service.
  const served = await waitFor(
    async () => {
      const r = await get(updater.httpPort, { host: 'shop.test' });
      return r.status === 200 ? r.body.trim() : null;
    },
    { what: 'shop.test served after the restart', timeoutMs: 15_000 },
  );
  assert.equal(served, 'first', 'shop.test moved to the alphabetically first service');
  for (let i = 0; i < 5; i++) assert.equal(await routedTo('shop.test'), 'first', 'shop.test moved to the alphabetically first service');
  assert.equal(await routedTo('later.test'), 'later');
  assert.equal(await conflicts(), 1);
});

test('files the updater writes are 0600, sockets mode 600, the state dir 0700', async () => {
  // A structural change (a new service with a health check reloads on every version) so the server-state file exists.
  await etcd.ctl('put', `${H}/checked/domain`, 'checked.test');
  await etcd.ctl('put', `${H}/checked/options`, '{"healthPath":"/health"}');
  await etcd.ctl('put', `${H}/checked/upstreams/a`, `127.0.0.1:${backends.get('web')!.port}`);
  await waitFor(async () => (await routedTo('checked.test')) === 'web', { what: 'checked.test routed', timeoutMs: 15_000 });
  const entries = await readdir(stateDir, { recursive: true });
  const seen = new Set<string>();
  assert.equal((await lstat(stateDir)).mode & 0o777, 0o700, 'state dir');
  for (const rel of entries) {
    const st = await lstat(path.join(stateDir, rel));
    const mode = st.mode & 0o777;
    if (st.isDirectory()) assert.equal(mode & 0o077, 0, `${rel}/ is open to others (${mode.toString(8)})`);
    else {
      assert.equal(mode & 0o077, 0, `${rel} is open to others (${mode.toString(8)})`);
      seen.add(path.basename(rel));
    }
  }
  for (const name of ['haproxy.cfg', 'haproxy.cfg.prev', 'hosts.map', 'sni.map', 'admin.sock', 'master.sock']) assert.ok(seen.has(name), `${name} not found in ${[...seen].join(', ')}`);
  assert.ok([...seen].some((n) => /state/.test(n)), `server-state file not found in ${[...seen].join(', ')}`);
});

// ------------------------------------------------------------------------------ iptables

const ROOT = process.getuid?.() === 0;
const NS = `hu-${process.pid}-${randomBytes(3).toString('hex')}`;
const TAG = 'haproxy-updater-guard';

test('stale tagged guard rules (iptables and ip6tables) are removed at start with --reload-guard none', { skip: ROOT ? false : 'needs root (ip netns)' }, async (t) => {
  await execFileP('ip', ['netns', 'add', NS]);
  t.after(() => execFileP('ip', ['netns', 'del', NS]).then(() => undefined, () => undefined));
  await execFileP('ip', ['-n', NS, 'link', 'set', 'lo', 'up']);
  const ipt = (bin: string, ...args: string[]) => execFileP('ip', ['netns', 'exec', NS, bin, '-w', ...args]);
  const foreign = ['-p', 'tcp', '--dport', '22', '-m', 'comment', '--comment', 'someone-else', '-j', 'ACCEPT'];
  for (const bin of ['iptables', 'ip6tables']) {
    await ipt(bin, '-A', 'INPUT', ...foreign);
    await ipt(bin, '-I', 'INPUT', '-p', 'tcp', '-m', 'multiport', '--dports', '8080', '--syn', '-m', 'comment', '--comment', TAG, '-j', 'DROP');
    assert.ok((await ipt(bin, '-S', 'INPUT')).stdout.includes(TAG));
  }
  // The updater runs inside the namespace (etcd is unreachable from there: start-up does not wait for it).
  const dir = await tempDir('hu-secrets-ns-');
  t.after(() => removeDir(dir));
  // What a crash mid-reload of an iptables-guarded run leaves in its state dir besides the rules.
  await writeFile(path.join(dir, 'guard-engaged'), '1\n');
  const proc = startProcess('ip', [
    'netns', 'exec', NS, process.execPath, BIN, 'run',
    '--etcd', 'http://127.0.0.1:1',
    '--state-dir', dir,
    '--reload-guard', 'none',
    '--bind-address', '127.0.0.1',
    '--http-port', '8080',
    '--https-port', '0',
    '--listen', '',
    '--haproxy-bin', haproxyBin(),
    '--log-level', 'error',
  ]);
  t.after(async () => {
    await stopProcess(proc, 10_000);
    await killHaproxy(path.join(dir, 'master.sock'));
  });
  for (const bin of ['iptables', 'ip6tables']) {
    await waitFor(async () => !(await ipt(bin, '-S', 'INPUT')).stdout.includes(TAG), { what: `${bin} tagged rule removed`, timeoutMs: 15_000 });
    assert.match((await ipt(bin, '-S', 'INPUT')).stdout, /someone-else/, `${bin}: a foreign rule was removed`);
  }
  await waitFor(() => access(path.join(dir, 'guard-engaged')).then(() => false, () => true), { what: 'guard marker removed', timeoutMs: 5000 });
  // And it went on starting: HAProxy answers inside the namespace (no route yet: 503).
  await waitFor(async () => (await execFileP('ip', ['netns', 'exec', NS, 'curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', 'http://127.0.0.1:8080/']).catch(() => ({ stdout: '' }))).stdout === '503', {
    what: 'HAProxy serving in the namespace',
    timeoutMs: 20_000,
  });
});
