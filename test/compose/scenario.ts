/**
 * The checks of `npm run test:compose`, run by test/compose/run.sh once the images exist and
 * a private dockerd answers on DOCKER_HOST. Starts docker-compose.yml with the test override,
 * then, under a bounded request loop on loopback:
 *   both demo apps answer through HAProxy; the updater's HEALTHCHECK turns healthy;
 *   `docker-compose exec updater ... status` shows the slots; the sockets and files on the
 *   shared volume are used by both containers as uid 99; a stopped registrar's upstream
 *   leaves within its TTL; `docker-compose restart updater` costs 0 reloads (master CLI) and
 *   0 failed requests; a new service put with etcdctl is routed.
 * Figures go to stdout (one per line), progress to stderr (kept by run.sh, shown on failure).
 * The stack is left running: run.sh tears it down and checks nothing is left.
 */
import { execFile } from 'node:child_process';
import http from 'node:http';
import net from 'node:net';
import assert from 'node:assert/strict';
import { sleep, waitFor } from '../../testkit/index.js';

const env = (name: string): string => {
  const v = process.env[name];
  if (!v) throw new Error(`scenario: ${name} is not set (run it through test/compose/run.sh)`);
  return v;
};
const ROOT = env('HU_COMPOSE_ROOT');
const OVERRIDE = env('HU_COMPOSE_OVERRIDE');
const PROJECT = env('COMPOSE_PROJECT_NAME');
const HTTP_PORT = Number(env('HU_HTTP_PORT'));
const ETCD_PORT = Number(env('HU_ETCD_PORT'));
const APP_A_PORT = Number(env('HU_APP_A_PORT'));
const APP_B_PORT = Number(env('HU_APP_B_PORT'));
/** The registrars' --ttl in docker-compose.yml. */
const TTL_MS = 10_000;
const PREFIX = '/haproxy-discover';
const UPDATER_BIN = '/app/bin/haproxy-updater.js';

const t0 = Date.now();
const progress = (msg: string) => process.stderr.write(`[${((Date.now() - t0) / 1000).toFixed(1)}s] ${msg}\n`);
const figures: string[] = [];
const figure = (line: string) => {
  figures.push(line);
  progress(`figure: ${line}`);
};

function exec(file: string, args: string[], timeoutMs = 120_000): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(file, args, { timeout: timeoutMs, maxBuffer: 32 << 20 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${file} ${args.join(' ')} failed: ${err.message}\n${stderr}`));
      else resolve(String(stdout));
    });
  });
}
const compose = (args: string[], timeoutMs?: number) =>
  exec('docker-compose', ['--project-directory', ROOT, '-f', `${ROOT}/docker-compose.yml`, '-f', OVERRIDE, ...args], timeoutMs);
const composeExec = (service: string, argv: string[]) => compose(['exec', '-T', service, ...argv]);

// ------------------------------------------------------------------------------ requests

interface Reply {
  status: number;
  body: string;
}
/** One request on a fresh connection (a reload must not hide behind keep-alive). */
function get(host: string, timeoutMs = 3000): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port: HTTP_PORT, path: '/', headers: { host }, agent: false, timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
  });
}

/**
 * Two workers sending requests for app.localhost back to back, bounded in count and time.
 * A reply counts as ok when it is 200 from one of the demo apps.
 */
class Load {
  static readonly MAX_REQUESTS = 400_000;
  static readonly MAX_MS = 15 * 60_000;
  total = 0;
  failed = 0;
  readonly failures: string[] = [];
  readonly lastSeen = new Map<string, number>();
  #stopped = false;
  #workers: Promise<void>[] = [];
  readonly #started = Date.now();

  start(): this {
    for (let i = 0; i < 2; i++) this.#workers.push(this.#worker());
    return this;
  }

  async #worker(): Promise<void> {
    while (!this.#stopped && this.total < Load.MAX_REQUESTS && Date.now() - this.#started < Load.MAX_MS) {
      this.total++;
      try {
        const r = await get('app.localhost');
        const who = r.body.trim();
        if (r.status !== 200 || !['app-a', 'app-b'].includes(who)) throw new Error(`status ${r.status}: ${r.body.slice(0, 80)}`);
        this.lastSeen.set(who, Date.now());
      } catch (err) {
        this.failed++;
        if (this.failures.length < 20) this.failures.push(`${new Date().toISOString()} ${(err as Error).message}`);
      }
    }
  }

  /** Counters since now: call the result to read them. */
  mark(): () => { total: number; failed: number } {
    const t = this.total;
    const f = this.failed;
    return () => ({ total: this.total - t, failed: this.failed - f });
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    await Promise.all(this.#workers);
  }
}

// ------------------------------------------------------------------------------ HAProxy master CLI

let masterSocket = '';
/** The master's reload counter from `show proc`, read on the host through the volume. */
async function masterReloads(): Promise<number> {
  const reply = await new Promise<string>((resolve, reject) => {
    const s = net.connect(masterSocket);
    let out = '';
    s.setTimeout(5000, () => s.destroy(new Error('master CLI timeout')));
    s.on('connect', () => s.end('show proc\n')); // the master answers once the client half-closes
    s.on('data', (d) => (out += d.toString()));
    s.on('end', () => resolve(out));
    s.on('error', reject);
  });
  const m = /^\d+\s+master\s+(\d+)/m.exec(reply);
  assert.ok(m, `show proc: no master line in ${JSON.stringify(reply.slice(0, 300))}`);
  return Number(m[1]);
}

// ------------------------------------------------------------------------------ status

interface Slot {
  backend: string;
  slot: string;
  upstream: string;
  address: string;
  admin: string;
}
async function status(): Promise<{ header: string; slots: Slot[] }> {
  const out = await composeExec('updater', ['node', UPDATER_BIN, 'status']);
  const lines = out.split('\n').filter((l) => l.trim() !== '');
  const header = lines.find((l) => l.startsWith('haproxy master')) ?? '';
  const start = lines.findIndex((l) => l.startsWith('BACKEND'));
  assert.ok(start >= 0, `status printed no table:\n${out}`);
  const slots = lines.slice(start + 1).map((l) => {
    const [backend = '', slot = '', upstream = '', address = '', admin = ''] = l.trim().split(/\s+/);
    return { backend, slot, upstream, address, admin };
  });
  return { header, slots };
}
/** waitFor on a probe that returns the elapsed ms once its condition holds (false before). */
const elapsed = async (fn: () => Promise<number | false>, opts: Parameters<typeof waitFor>[1]): Promise<number> => Number(await waitFor(fn, opts));
const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

async function health(id: string): Promise<string> {
  return (await exec('docker', ['inspect', '-f', '{{.State.Health.Status}}', id])).trim();
}

// ------------------------------------------------------------------------------ scenario

async function main(): Promise<void> {
  // up, and the first routed request, timed from the same instant
  const upAt = Date.now();
  const up = compose(['up', '-d', '--no-build'], 600_000);
  let upDone = false;
  up.then(
    () => (upDone = true),
    () => (upDone = true),
  );
  const firstMs = await elapsed(async () => {
    if (upDone) await up; // a failed `up` ends the wait with its error
    const r = await get('app.localhost', 1000);
    return r.status === 200 && /^app-[ab]$/.test(r.body.trim()) ? Date.now() - upAt : false;
  }, { timeoutMs: 300_000, what: 'the first request routed to a demo app', intervalMs: 100 });
  figure(`time from \`docker-compose up\` to the first routed request: ${seconds(firstMs)}`);
  await up;
  progress('up done');

  const vol = (await exec('docker', ['volume', 'inspect', '-f', '{{.Mountpoint}}', `${PROJECT}_state`])).trim();
  masterSocket = `${vol}/master.sock`;

  const load = new Load().start();
  try {
    // both demo apps answer through HAProxy
    await waitFor(async () => load.lastSeen.has('app-a') && load.lastSeen.has('app-b'), { timeoutMs: 60_000, what: 'both demo apps to answer', intervalMs: 200 });
    progress('both apps answer');

    // the HEALTHCHECK turns healthy
    const updaterId = (await compose(['ps', '-q', 'updater'])).trim();
    assert.ok(updaterId, 'no updater container');
    const healthyMs = await elapsed(async () => ((await health(updaterId)) === 'healthy' ? Date.now() - upAt : false), { timeoutMs: 120_000, what: 'the updater HEALTHCHECK to turn healthy', intervalMs: 500 });
    figure(`updater HEALTHCHECK healthy ${seconds(healthyMs)} after up`);

    // status shows the slots (through both sockets on the shared volume)
    const st = await status();
    assert.match(st.header, /^haproxy master \d+: \d+ reloads/, 'status reached the master socket');
    const appSlots = st.slots.filter((s) => s.address === `127.0.0.1:${APP_A_PORT}` || s.address === `127.0.0.1:${APP_B_PORT}`);
    assert.equal(appSlots.length, 2, `status shows both upstreams:\n${JSON.stringify(st.slots, null, 1)}`);
    for (const s of appSlots) assert.ok(s.upstream !== '?' && s.upstream !== '-' && s.admin === 'ready', `slot ${JSON.stringify(s)}`);
    const appBackend = appSlots[0]!.backend;
    const free = st.slots.filter((s) => s.backend === appBackend && s.address === '(free)').length;
    assert.ok(free > 0, 'the app backend has pre-allocated free slots');
    figure(`status: backend ${appBackend} has ${appSlots.length} used and ${free} free slots`);

    // socket and file permissions on the shared volume, as the compose file and Dockerfile promise
    for (const svc of ['haproxy', 'updater']) {
      assert.equal((await composeExec(svc, ['id', '-u'])).trim(), '99', `${svc} runs as uid 99`);
    }
    const listing = await composeExec('haproxy', ['sh', '-c', 'stat -c "%u:%g %a %F %n" /state /state/*']);
    const entries = listing.trim().split('\n').map((l) => {
      const [owner = '', mode = '', ...rest] = l.split(' ');
      const name = rest.at(-1) ?? '';
      return { owner, mode, type: rest.slice(0, -1).join(' '), name };
    });
    const entry = (name: string) => {
      const e = entries.find((x) => x.name === name);
      assert.ok(e, `${name} missing on the shared volume:\n${listing}`);
      return e;
    };
    assert.equal(entry('/state').owner, '99:99', 'the volume root takes the image directory owner (uid 99)');
    assert.equal(entry('/state/master.sock').type, 'socket');
    assert.equal(entry('/state/admin.sock').type, 'socket');
    assert.equal(entry('/state/haproxy.cfg').type, 'regular file');
    for (const e of entries) assert.match(e.owner, /^99:/, `everything on the shared volume belongs to uid 99:\n${listing}`);
    // the updater writes where HAProxy reads, and reaches both sockets (status above used them)
    await composeExec('updater', ['sh', '-c', 'test -w /state && test -r /state/haproxy.cfg && test -w /state/master.sock && test -w /state/admin.sock']);
    figure(`shared volume: ${entries.length - 1} entries, all uid 99 (haproxy and updater both run as 99)`);

    // the updater's `haproxy -c` is the HAProxy that runs the config (same binary version)
    const version = async (svc: string) => /version (\S+)/.exec(await composeExec(svc, ['haproxy', '-v']))?.[1];
    const [hv, uv] = [await version('haproxy'), await version('updater')];
    assert.ok(hv && hv === uv, `haproxy -v: haproxy container ${hv}, updater container ${uv}`);
    figure(`haproxy -c in the updater image: HAProxy ${uv}, as in the haproxy container`);

    // a stopped registrar: its upstream leaves within the TTL. `stop` (SIGTERM) lets it
    // deregister; `kill` (SIGKILL) leaves it to the lease, which expires at most a TTL
    // after the last keep-alive (plus etcd's expiry sweep, the watch and the runtime op: 2 s
    // of slack). The app itself keeps running, so the last request HAProxy sent it marks the
    // moment it left (`status`, ~1 s per call, only confirms).
    for (const [how, limitMs] of [['stop', TTL_MS], ['kill', TTL_MS + 2000]] as const) {
      const window = load.mark();
      const stopAt = Date.now();
      await compose([how, 'app-b-register']);
      await waitFor(async () => {
        const s = await status();
        return !s.slots.some((x) => x.address === `127.0.0.1:${APP_B_PORT}` && x.admin === 'ready');
      }, { timeoutMs: TTL_MS + 20_000, what: `app-b to leave after docker-compose ${how}`, intervalMs: 250 });
      await sleep(300); // requests already sent to app-b finish
      const lastB = load.lastSeen.get('app-b') ?? 0;
      const goneMs = Math.max(0, lastB - stopAt);
      await sleep(1000);
      assert.equal(load.lastSeen.get('app-b') ?? 0, lastB, `app-b still gets requests after it left (${how})`);
      const w = window();
      figure(`registrar ${how === 'stop' ? 'stopped (SIGTERM)' : 'killed (SIGKILL)'}: upstream gone from HAProxy after ${seconds(goneMs)} (TTL ${seconds(TTL_MS)}); ${w.failed} failed of ${w.total}`);
      assert.ok(goneMs <= limitMs, `upstream left ${goneMs} ms after docker-compose ${how}, limit ${limitMs} ms`);
      assert.equal(w.failed, 0, `failed requests while app-b left:\n${load.failures.join('\n')}`);
      await compose(['start', 'app-b-register']);
      const back = Date.now();
      await waitFor(async () => (load.lastSeen.get('app-b') ?? 0) > back, { timeoutMs: 60_000, what: 'app-b back', intervalMs: 200 });
      progress('app-b back');
    }

    // restart of the updater: 0 reloads, 0 failed requests
    {
      const before = await masterReloads();
      const window = load.mark();
      await compose(['restart', 'updater']);
      const restartedAt = Date.now();
      // wait for the new process to report healthy, then a few more seconds of traffic
      await waitFor(async () => (await health(updaterId)) === 'healthy' && Date.now() - restartedAt > 2000, { timeoutMs: 120_000, what: 'the restarted updater to be healthy', intervalMs: 500 });
      await sleep(3000);
      const after = await masterReloads();
      const w = window();
      figure(`docker-compose restart updater: ${after - before} reloads, ${w.failed} failed of ${w.total} requests`);
      assert.equal(after - before, 0, 'restarting the updater reloaded HAProxy');
      assert.equal(w.failed, 0, `failed requests across the restart:\n${load.failures.join('\n')}`);
      assert.ok(w.total > 50, `too few requests in the restart window (${w.total})`);
    }

    // a new service put with etcdctl is routed
    {
      const before = await masterReloads();
      const window = load.mark();
      const putAt = Date.now();
      const etcdctl = (...a: string[]) => composeExec('etcd', ['etcdctl', `--endpoints=http://127.0.0.1:${ETCD_PORT}`, ...a]);
      await etcdctl('put', `${PREFIX}/http-services/web/upstreams/w1`, `127.0.0.1:${APP_A_PORT}`);
      await etcdctl('put', `${PREFIX}/http-services/web/domain`, 'web.localhost');
      const routedMs = await elapsed(async () => {
        const r = await get('web.localhost', 1000);
        return r.status === 200 && r.body.trim() === 'app-a' ? Date.now() - putAt : false;
      }, { timeoutMs: 60_000, what: 'web.localhost to be routed', intervalMs: 100 });
      await sleep(1000);
      const w = window();
      const reloads = (await masterReloads()) - before;
      figure(`new service via etcdctl routed after ${seconds(routedMs)} (${reloads} reload(s)); ${w.failed} failed of ${w.total} requests meanwhile`);
      assert.equal(w.failed, 0, `failed requests while the new service was added:\n${load.failures.join('\n')}`);
    }
  } finally {
    await load.stop();
  }
  figure(`requests under load: ${load.total}, failed: ${load.failed}`);
  assert.equal(load.failed, 0, load.failures.join('\n'));
  process.stdout.write(figures.join('\n') + '\n');
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    const cause = err instanceof Error && err.cause ? `\ncause: ${String(err.cause)}` : '';
    process.stderr.write(`scenario failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}${cause}\n`);
    process.stdout.write(figures.join('\n') + '\n');
    process.exit(1);
  },
);
