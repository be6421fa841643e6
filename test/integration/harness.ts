/**
 * Test harness: real HAProxy (master-worker) and real etcd processes on free loopback
 * ports in temporary directories, small HTTP backends, and a bounded load generator.
 * Every process started here is tracked by PID and killed when its test ends (register
 * `stop` with `t.after`) and, as a last resort, when the test process exits.
 * Used by the integration tests, the benchmark and the demo.
 */
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

export const execFileP = promisify(execFile);

/** Binaries under test: env HAPROXY_BIN / ETCD_BIN / ETCDCTL_BIN (the version matrix), else the PATH's. */
export const HAPROXY_BIN = process.env.HAPROXY_BIN || 'haproxy';
export const ETCD_BIN = process.env.ETCD_BIN || 'etcd';
export const ETCDCTL_BIN = process.env.ETCDCTL_BIN || 'etcdctl';

const tracked = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of tracked) {
    try {
      if (child.pid) process.kill(child.pid, 'SIGKILL');
    } catch {
      /* already gone */
    }
  }
});

/** A free TCP port on 127.0.0.1 (bound then released; good enough for tests). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === 'object' && addr ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}

export async function tempDir(prefix = 'hu-test-'): Promise<string> {
  return mkdtemp(path.join(os.tmpdir(), prefix));
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Polls `fn` until it returns a truthy value or `timeoutMs` passes. */
export async function waitFor<T>(fn: () => Promise<T> | T, { timeoutMs = 10_000, intervalMs = 50, what = 'condition' } = {}): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastErr: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (err) {
      lastErr = err;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`, { cause: lastErr });
    }
    await sleep(intervalMs);
  }
}

export interface Proc {
  readonly child: ChildProcess;
  readonly pid: number;
  /** Lines of stdout+stderr (last 500), for diagnostics. */
  readonly output: string[];
}

export function startProcess(cmd: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): Proc {
  const child = spawn(cmd, args, { cwd: opts.cwd, env: opts.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] });
  tracked.add(child);
  const output: string[] = [];
  const collect = (buf: Buffer) => {
    for (const line of buf.toString('utf8').split('\n')) {
      if (line) output.push(line);
    }
    if (output.length > 500) output.splice(0, output.length - 500);
  };
  child.stdout?.on('data', collect);
  child.stderr?.on('data', collect);
  child.once('exit', () => tracked.delete(child));
  if (!child.pid) throw new Error(`could not start ${cmd}`);

  return { child, pid: child.pid, output };
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves when the process has exited. */
export async function stopProcess(proc: Proc, graceMs = 3000): Promise<void> {
  const { child } = proc;
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(timer);
}

// ---------------------------------------------------------------------------- TLS

/** PEM file paths for an etcd client (what `RegistryWatcher`'s `tls` option takes). */
export interface EtcdTlsFiles {
  readonly ca: string;
  readonly cert: string;
  readonly key: string;
}

export interface TestCa {
  /** CA certificate (PEM). */
  readonly cert: string;
  /** CA private key (PEM). */
  readonly key: string;
  /**
   * Issues a certificate signed by this CA into the CA's directory as `<name>.crt` /
   * `<name>.key`. `ips` become subjectAltName IP entries; `usage` the extendedKeyUsage.
   */
  issue(name: string, o?: { ips?: string[]; usage?: ('serverAuth' | 'clientAuth')[] }): Promise<{ cert: string; key: string }>;
}

const openssl = (args: string[]) => execFileP('openssl', args);
/** P-256 keys: generated in milliseconds, accepted by etcd (Go) and grpc-js alike. */
const EC_KEY = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

/** A throwaway CA in `dir` (files `<name>-ca.crt` / `<name>-ca.key`), valid for a day. */
export async function createTestCa(dir: string, name = 'test'): Promise<TestCa> {
  const caCert = path.join(dir, `${name}-ca.crt`);
  const caKey = path.join(dir, `${name}-ca.key`);
  const caExt = path.join(dir, `${name}-ca.ext`);
  await writeFile(caExt, 'basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\n');
  const caCsr = path.join(dir, `${name}-ca.csr`);
  await openssl(['req', '-new', ...EC_KEY, '-keyout', caKey, '-out', caCsr, '-subj', `/CN=haproxy-updater test CA ${name}`]);
  await openssl(['x509', '-req', '-in', caCsr, '-signkey', caKey, '-out', caCert, '-days', '1', '-extfile', caExt]);
  let serial = 1;
  return {
    cert: caCert,
    key: caKey,
    async issue(certName, o = {}) {
      const cert = path.join(dir, `${certName}.crt`);
      const key = path.join(dir, `${certName}.key`);
      const csr = path.join(dir, `${certName}.csr`);
      const ext = path.join(dir, `${certName}.ext`);
      const usage = o.usage ?? ['clientAuth'];
      const lines = ['basicConstraints=critical,CA:FALSE', 'keyUsage=critical,digitalSignature,keyEncipherment', `extendedKeyUsage=${usage.join(',')}`];
      if (o.ips?.length) lines.push(`subjectAltName=${o.ips.map((ip) => `IP:${ip}`).join(',')}`);
      await writeFile(ext, lines.join('\n') + '\n');
      await openssl(['req', '-new', ...EC_KEY, '-keyout', key, '-out', csr, '-subj', `/CN=${certName}`]);
      await openssl(['x509', '-req', '-in', csr, '-CA', caCert, '-CAkey', caKey, '-set_serial', String(serial++), '-out', cert, '-days', '1', '-extfile', ext]);
      return { cert, key };
    },
  };
}

// ---------------------------------------------------------------------------- etcd

export interface EtcdHandle {
  /** `http://127.0.0.1:<port>`, or `https://…` with `tls`. */
  readonly endpoint: string;
  readonly dataDir: string;
  readonly clientPort: number;
  /** With `startEtcd({ tls: true })`: the CA and a client certificate etcd accepts. */
  readonly tls?: EtcdTlsFiles;
  proc: Proc;
  /** Stops etcd gracefully (data kept). */
  stop(): Promise<void>;
  /** SIGKILL (data kept). */
  kill(): Promise<void>;
  /** Starts again on the same ports and data dir. */
  start(): Promise<void>;
  /** Runs etcdctl against this etcd (with the client certificate when TLS is on). */
  ctl(...args: string[]): Promise<string>;
  /** Stops and removes the data dir. */
  destroy(): Promise<void>;
}

export interface StartEtcdOptions {
  /**
   * Serve clients over https only, requiring a client certificate (`--client-cert-auth`):
   * a throwaway CA, a server certificate for IP 127.0.0.1 and a client certificate are
   * generated in the temp dir. Peer traffic stays plain http.
   */
  tls?: boolean;
}

export async function startEtcd(opts: StartEtcdOptions = {}): Promise<EtcdHandle> {
  const dir = await tempDir('hu-etcd-');
  const clientPort = await freePort();
  const peerPort = await freePort();
  const endpoint = `${opts.tls ? 'https' : 'http'}://127.0.0.1:${clientPort}`;
  let tls: EtcdTlsFiles | undefined;
  const tlsArgs: string[] = [];
  if (opts.tls) {
    const ca = await createTestCa(dir, 'etcd');
    // clientAuth too: etcd 3.4's gRPC gateway dials its own listener with the server cert.
    const server = await ca.issue('etcd-server', { ips: ['127.0.0.1'], usage: ['serverAuth', 'clientAuth'] });
    const client = await ca.issue('etcd-client', { usage: ['clientAuth'] });
    tls = { ca: ca.cert, cert: client.cert, key: client.key };
    tlsArgs.push('--cert-file', server.cert, '--key-file', server.key, '--trusted-ca-file', ca.cert, '--client-cert-auth');
  }
  const args = [
    '--name', 'test',
    '--data-dir', path.join(dir, 'data'),
    '--listen-client-urls', endpoint,
    '--advertise-client-urls', endpoint,
    '--listen-peer-urls', `http://127.0.0.1:${peerPort}`,
    '--initial-advertise-peer-urls', `http://127.0.0.1:${peerPort}`,
    '--initial-cluster', `test=http://127.0.0.1:${peerPort}`,
    ...tlsArgs,
    '--log-level', 'error',
    '--logger', 'zap',
  ];
  const ctlTls = tls ? ['--cacert', tls.ca, '--cert', tls.cert, '--key', tls.key] : [];
  const ctl = async (...ctlArgs: string[]) => {
    const { stdout } = await execFileP(ETCDCTL_BIN, ['--endpoints', endpoint, ...ctlTls, ...ctlArgs], {
      env: { ...process.env, ETCDCTL_API: '3' },
    });
    return stdout;
  };
  const launch = async () => {
    const proc = startProcess(ETCD_BIN, args, { env: { ...process.env, ETCD_UNSUPPORTED_ARCH: process.arch === 'x64' ? '' : process.arch } });
    await waitFor(
      async () => {
        if (proc.child.exitCode !== null) throw new Error(`etcd exited: ${proc.output.slice(-5).join('\n')}`);
        await ctl('endpoint', 'health');
        return true;
      },
      { timeoutMs: 20_000, intervalMs: 100, what: 'etcd health' },
    ).catch(async (err: unknown) => {
      await stopProcess(proc, 500);
      throw err;
    });
    return proc;
  };
  const handle: EtcdHandle = {
    endpoint,
    dataDir: dir,
    clientPort,
    ...(tls ? { tls } : {}),
    proc: await launch(),
    stop: async () => stopProcess(handle.proc),
    kill: async () => stopProcess(handle.proc, 0).then(() => undefined),
    start: async () => {
      handle.proc = await launch();
    },
    ctl,
    destroy: async () => {
      await stopProcess(handle.proc);
      await rm(dir, { recursive: true, force: true });
    },
  };
  handle.kill = async () => {
    const { child } = handle.proc;
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((r) => child.once('exit', () => r()));
    child.kill('SIGKILL');
    await exited;
  };
  return handle;
}

// ---------------------------------------------------------------------------- HAProxy

export interface HaproxyHandle {
  readonly dir: string;
  readonly cfgPath: string;
  readonly masterSocket: string;
  /** Path where configs rendered by `haproxyTestConfig` put the admin socket. */
  readonly adminSocket: string;
  readonly proc: Proc;
  /** Master PID. */
  readonly pid: number;
  stop(): Promise<void>;
}

/**
 * Starts `haproxy -W -S <dir>/master.sock,level,admin -f <dir>/haproxy.cfg` with the given
 * config text; `{{DIR}}` in it is replaced by the temp dir. Resolves when the admin
 * socket answers (if the config declares `{{DIR}}/admin.sock`) or the master does.
 */
export async function startHaproxy(config: string, opts: { dir?: string } = {}): Promise<HaproxyHandle> {
  const dir = opts.dir ?? (await tempDir('hu-haproxy-'));
  const cfgPath = path.join(dir, 'haproxy.cfg');
  const masterSocket = path.join(dir, 'master.sock');
  const adminSocket = path.join(dir, 'admin.sock');
  await writeFile(cfgPath, config.replaceAll('{{DIR}}', dir));
  // Map files named in the config must exist before HAProxy starts.
  for (const m of config.matchAll(/\{\{DIR\}\}\/([\w.-]+\.map)/g)) {
    const mapPath = path.join(dir, m[1] ?? '');
    if (!existsSync(mapPath)) await writeFile(mapPath, '');
  }
  await execFileP(HAPROXY_BIN, ['-c', '-f', cfgPath]).catch((err: { stderr?: string }) => {
    throw new Error(`test config invalid: ${err.stderr || String(err)}`);
  });
  const proc = startProcess(HAPROXY_BIN, ['-W', '-S', `${masterSocket},level,admin`, '-f', cfgPath], { cwd: dir });
  const usesAdmin = config.includes('{{DIR}}/admin.sock');
  await waitFor(
    async () => {
      if (proc.child.exitCode !== null) throw new Error(`haproxy exited: ${proc.output.slice(-10).join('\n')}`);
      // Both must answer: the master socket can refuse for a moment after the worker is up.
      const procList = await socketCommand(masterSocket, 'show proc');
      const info = usesAdmin ? await socketCommand(adminSocket, 'show info') : 'n/a';
      return procList.includes('worker') && info.length > 0;
    },
    { timeoutMs: 10_000, what: 'haproxy sockets' },
  ).catch(async (err: unknown) => {
    await stopProcess(proc, 500);
    throw err;
  });
  return {
    dir,
    cfgPath,
    masterSocket,
    adminSocket,
    proc,
    pid: proc.pid,
    stop: async () => {
      // SIGUSR1 = soft stop in master-worker mode; stopProcess escalates to SIGKILL.
      await stopProcess(proc, 3000);
    },
  };
}

/**
 * A minimal raw socket call for the harness itself (readiness, assertions independent of
 * src/runtime): sends one line, half-closes, reads to EOF.
 */
export function socketCommand(socketPath: string, command: string, timeoutMs = 3000): Promise<string> {
  return new Promise((resolve, reject) => {
    if (!existsSync(socketPath)) return reject(new Error(`no socket ${socketPath}`));
    const sock = net.createConnection(socketPath);
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => sock.destroy(new Error(`timeout: ${command}`)), timeoutMs);
    sock.on('connect', () => sock.end(command + '\n'));
    sock.on('data', (c) => chunks.push(c));
    sock.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    sock.on('close', () => {
      clearTimeout(timer);
      resolve(Buffer.concat(chunks).toString('utf8'));
    });
  });
}

/**
 * A small HAProxy config for runtime tests: admin socket in the temp dir, server-state
 * file, one HTTP frontend on `httpPort` routing by a hosts map to backends that each have
 * `slots` template slots declared as the notes prescribe.
 */
export function haproxyTestConfig(o: { httpPort: number; backends: string[]; slots?: number; extra?: string }): string {
  const slots = o.slots ?? 4;
  const backends = o.backends
    .map(
      (b) => `backend ${b}
    balance roundrobin
    server-template s 1-${slots} slot.invalid:1 check disabled init-addr last,0.0.0.0
`,
    )
    .join('\n');
  return `global
    stats socket {{DIR}}/admin.sock mode 600 level admin
    server-state-file {{DIR}}/server-state
    stats timeout 10s
defaults
    mode http
    load-server-state-from-file global
    default-server inter 1s fastinter 200ms downinter 1s fall 2 rise 2
    timeout connect 2s
    timeout client 10s
    timeout server 10s
frontend fe
    bind 127.0.0.1:${o.httpPort}
    use_backend %[req.hdr(host),field(1,:),lower,map({{DIR}}/hosts.map,no-route)]
backend no-route
    http-request return status 503 content-type text/plain string "no route"
${backends}
${o.extra ?? ''}
`;
}

// ---------------------------------------------------------------------------- HTTP backends

export interface Backend {
  readonly id: string;
  readonly port: number;
  /** Requests served (excluding /health). */
  hits: number;
  /** Time of the first non-health request, ms since epoch (0 = none yet). */
  firstHitAt: number;
  close(): Promise<void>;
}

/** An HTTP server on 127.0.0.1 answering `<id>\n`; `/health` answers 200 without counting. */
export async function startBackend(id: string, opts: { delayMs?: number; port?: number } = {}): Promise<Backend> {
  const state = { hits: 0, firstHitAt: 0 };
  const server = http.createServer((req, res) => {
    if (req.url === '/health') {
      res.end('ok\n');
      return;
    }
    state.hits++;
    if (!state.firstHitAt) state.firstHitAt = Date.now();
    const send = () => {
      res.setHeader('content-type', 'text/plain');
      res.end(`${id}\n`);
    };
    if (opts.delayMs) setTimeout(send, opts.delayMs);
    else send();
  });
  server.keepAliveTimeout = 1000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, '127.0.0.1', () => resolve());
  });
  const addr = server.address();
  const port = typeof addr === 'object' && addr ? addr.port : 0;
  const backend: Backend = {
    id,
    port,
    get hits() {
      return state.hits;
    },
    set hits(v: number) {
      state.hits = v;
    },
    get firstHitAt() {
      return state.firstHitAt;
    },
    set firstHitAt(v: number) {
      state.firstHitAt = v;
    },
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
  return backend;
}

// ---------------------------------------------------------------------------- load

export interface LoadResult {
  ok: number;
  failed: number;
  /** Status codes / error codes of failures, counted. */
  failures: Record<string, number>;
  /** Latencies in ms of all requests. */
  latencies: number[];
  /** Body (trimmed) → count, for ok responses. */
  bodies: Record<string, number>;
}

export interface LoadOptions {
  /** e.g. http://127.0.0.1:8080/ */
  url: string;
  host?: string;
  /** Parallel request loops. Default 4. */
  concurrency?: number;
  /** Hard stop. Default 5000 ms. */
  durationMs?: number;
  /** Hard cap on requests. Default 100 000. */
  maxRequests?: number;
  /** A status counts as ok when this returns true. Default: 2xx. */
  okStatus?: (status: number) => boolean;
  /** New TCP connection per request (default true: exercises accept during reloads). */
  newConnection?: boolean;
  /** Stop early when this signal aborts. */
  signal?: AbortSignal;
}

/** Bounded in count and time; loopback only. */
export async function runLoad(o: LoadOptions): Promise<LoadResult> {
  const result: LoadResult = { ok: 0, failed: 0, failures: {}, latencies: [], bodies: {} };
  const url = new URL(o.url);
  if (!['127.0.0.1', 'localhost', '[::1]'].includes(url.hostname) && !url.hostname.startsWith('127.') && !url.hostname.startsWith('10.200.')) {
    throw new Error(`load target must be loopback or a test namespace address, got ${url.hostname}`);
  }
  const deadline = Date.now() + (o.durationMs ?? 5000);
  const max = o.maxRequests ?? 100_000;
  const okStatus = o.okStatus ?? ((s: number) => s >= 200 && s < 300);
  const agent = o.newConnection === false ? new http.Agent({ keepAlive: true, maxSockets: o.concurrency ?? 4 }) : undefined;
  let sent = 0;
  const one = () =>
    new Promise<void>((resolve) => {
      const start = performance.now();
      const req = http.request(
        {
          host: url.hostname.replace(/^\[|\]$/g, ''),
          port: url.port,
          path: url.pathname + url.search,
          headers: { host: o.host ?? url.host, connection: agent ? 'keep-alive' : 'close' },
          agent: agent ?? false,
          timeout: 10_000,
        },
        (res) => {
          let body = '';
          res.setEncoding('utf8');
          res.on('data', (c: string) => (body += c));
          res.on('end', () => {
            result.latencies.push(performance.now() - start);
            const status = res.statusCode ?? 0;
            if (okStatus(status)) {
              result.ok++;
              const key = body.trim();
              result.bodies[key] = (result.bodies[key] ?? 0) + 1;
            } else {
              result.failed++;
              result.failures[String(status)] = (result.failures[String(status)] ?? 0) + 1;
            }
            resolve();
          });
          res.on('error', (err: NodeJS.ErrnoException) => fail(err));
        },
      );
      const fail = (err: NodeJS.ErrnoException) => {
        result.latencies.push(performance.now() - start);
        result.failed++;
        const k = err.code ?? err.message;
        result.failures[k] = (result.failures[k] ?? 0) + 1;
        resolve();
      };
      req.on('timeout', () => req.destroy(Object.assign(new Error('timeout'), { code: 'ETIMEDOUT' })));
      req.on('error', fail);
      req.end();
    });
  const loop = async () => {
    while (Date.now() < deadline && sent < max && !o.signal?.aborted) {
      sent++;
      await one();
    }
  };
  await Promise.all(Array.from({ length: o.concurrency ?? 4 }, loop));
  agent?.destroy();
  return result;
}

export function percentile(values: number[], p: number): number {
  if (values.length === 0) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  const idx = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[idx] ?? 0;
}

export async function removeDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
}
