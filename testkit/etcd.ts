/** A real single-node etcd on free loopback ports in a temp dir, optionally serving TLS with client-cert auth. */
import path from 'node:path';
import { etcdBin, etcdctlBin } from './bins.js';
import { execFileP, killProcess, startProcess, stopProcess, waitReady, type Proc } from './process.js';
import { freePort, removeDir, tempDir } from './resources.js';
import { createTestCa, type EtcdTlsFiles } from './tls.js';

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
   * generated in the temp dir. Peer traffic stays plain http. Default false.
   */
  tls?: boolean;
}

export async function startEtcd(opts: StartEtcdOptions = {}): Promise<EtcdHandle> {
  const etcd = etcdBin();
  const etcdctl = etcdctlBin();
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
    const { stdout } = await execFileP(etcdctl, ['--endpoints', endpoint, ...ctlTls, ...ctlArgs], {
      env: { ...process.env, ETCDCTL_API: '3' },
    });
    return stdout;
  };
  const launch = async () => {
    const proc = startProcess(etcd, args, { env: { ...process.env, ETCD_UNSUPPORTED_ARCH: process.arch === 'x64' ? '' : process.arch } });
    await waitReady(proc, 'etcd health', async () => (await ctl('endpoint', 'health'), true), { timeoutMs: 20_000, intervalMs: 100 });
    return proc;
  };
  const handle: EtcdHandle = {
    endpoint,
    dataDir: dir,
    clientPort,
    ...(tls ? { tls } : {}),
    proc: await launch(),
    stop: async () => stopProcess(handle.proc),
    kill: async () => killProcess(handle.proc),
    start: async () => {
      handle.proc = await launch();
    },
    ctl,
    destroy: async () => {
      await stopProcess(handle.proc);
      await removeDir(dir);
    },
  };
  return handle;
}
