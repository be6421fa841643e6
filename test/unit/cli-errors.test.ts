/**
 * A person reads these: each error of the list is one line on stderr naming the flag
 * (and env var) and what to do, from the real bin. Nothing here needs etcd or HAProxy: an
 * endpoint that refuses (port 1) and an empty state dir stand for "down".
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const BIN = fileURLToPath(new URL('../../bin/haproxy-updater.js', import.meta.url));
const DOWN = 'http://127.0.0.1:1';
let dir: string;
let busy: net.Server;
let busyPort: number;

before(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'hu-cli-errors-'));
  busy = net.createServer();
  await new Promise<void>((r) => busy.listen(0, '127.0.0.1', () => r()));
  busyPort = (busy.address() as net.AddressInfo).port;
});
after(async () => {
  busy.close();
  await rm(dir, { recursive: true, force: true });
});

function run(args: string[], env: Record<string, string> = {}): Promise<{ code: number; stderr: string; stdout: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { env: { PATH: process.env.PATH, ...env }, timeout: 20_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? Number((err as { code?: unknown }).code ?? -1) : 0, stdout, stderr });
    });
  });
}

const cases: Array<{ name: string; args: () => string[]; env?: Record<string, string>; code: number; line: RegExp }> = [
  {
    name: 'a short stats password names the flag, the rule and the env var',
    args: () => ['render', '--etcd', DOWN, '--stats-port', '8404', '--stats-password', 'short'],
    code: 2,
    line: /^haproxy-updater render: --stats-password: must be 8-128 characters of .* \(HAPROXY_UPDATER_STATS_PASSWORD\)$/,
  },
  {
    name: 'a bad HAPROXY_UPDATER_HTTP_PORT is a flag error, before etcd is asked',
    args: () => ['plan', '--etcd', DOWN, '--state-dir', dir],
    env: { HAPROXY_UPDATER_HTTP_PORT: '99999' },
    code: 2,
    line: /^haproxy-updater plan: --http-port \(HAPROXY_UPDATER_HTTP_PORT\): 99999 is outside 1-65535$/,
  },
  {
    name: 'etcd down for plan names --etcd and the OS reason',
    args: () => ['plan', '--etcd', DOWN, '--state-dir', dir],
    code: 1,
    line: /^haproxy-updater plan: etcd http:\/\/127\.0\.0\.1:1 \(--etcd, HAPROXY_UPDATER_ETCD\): unreachable \(ECONNREFUSED\): start etcd or point --etcd at it$/,
  },
  {
    name: 'etcd down for deregister names --etcd',
    args: () => ['deregister', '--etcd', DOWN, '--service', 'web', '--id', 'web-1'],
    code: 1,
    line: /^haproxy-updater deregister: etcd .* \(--etcd, HAPROXY_UPDATER_ETCD\): unreachable/,
  },
  {
    name: 'status with no HAProxy on the state dir says which socket and what to check',
    args: () => ['status', '--etcd', DOWN, '--state-dir', dir],
    code: 1,
    line: /^haproxy-updater status: HAProxy socket .*admin\.sock \(--state-dir, --runtime-socket\): not answering \(ENOENT\): is `haproxy-updater run` running with this --state-dir\?$/,
  },
  {
    name: '--listen on a port in use gives EADDRINUSE',
    args: () => ['run', '--etcd', DOWN, '--state-dir', path.join(dir, 'listen'), '--listen', `127.0.0.1:${busyPort}`, '--http-port', '18080'],
    code: 2,
    line: /^haproxy-updater run: --listen \(HAPROXY_UPDATER_LISTEN\): cannot listen on 127\.0\.0\.1:\d+: the port is in use \(EADDRINUSE\)$/,
  },
  {
    name: 'a --max-removal that is not a percentage names the flag',
    args: () => ['run', '--etcd', DOWN, '--state-dir', path.join(dir, 'hold'), '--max-removal', 'half'],
    code: 2,
    line: /^haproxy-updater run: --max-removal \(HAPROXY_UPDATER_MAX_REMOVAL\): 'half' is not a percentage 0-100% \(e\.g\. 50%\)$/,
  },
  {
    name: 'release-hold with no daemon on --listen says so and names the flag',
    args: () => ['release-hold', '--listen', '127.0.0.1:1'],
    code: 1,
    line: /^haproxy-updater release-hold: no daemon answers on 127\.0\.0\.1:1 \(ECONNREFUSED\) \(--listen, HAPROXY_UPDATER_LISTEN\): is `haproxy-updater run` running with this --listen\?$/,
  },
  {
    name: 'an unknown --log-format names its choices',
    args: () => ['run', '--log-format', 'xml'],
    code: 2,
    line: /^haproxy-updater run: --log-format \(HAPROXY_UPDATER_LOG_FORMAT\): 'xml' is not one of json, pretty$/,
  },
  {
    name: 'a bad duration in the env names flag and env var',
    args: () => ['register', '--etcd', DOWN, '--addr', '127.0.0.1:3000', '--service', 'web'],
    env: { HAPROXY_UPDATER_TTL: 'soon' },
    code: 2,
    line: /^haproxy-updater register: --ttl \(HAPROXY_UPDATER_TTL\): 'soon' is not a duration/,
  },
];

for (const c of cases) {
  test(c.name, async () => {
    const r = await run(c.args(), c.env);
    const lines = r.stderr.split('\n').filter(Boolean);
    assert.equal(lines.length, 1, `one line on stderr, got:\n${r.stderr}`);
    assert.match(lines[0] ?? '', c.line);
    assert.equal(r.code, c.code, r.stderr);
  });
}
