/**
 * The CLI as other scripts use it: `register` (lease kept alive, removed on SIGTERM,
 * expiring after SIGKILL), `render`, `plan`, and clear errors for bad flags.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { HAPROXY_BIN, startEtcd, startProcess, stopProcess, waitFor, tempDir, removeDir, execFileP, type EtcdHandle } from './harness.js';
import { BIN } from './updater.js';

const P = '/haproxy-discover';
let etcd: EtcdHandle;
before(async () => {
  etcd = await startEtcd();
});
after(() => etcd.destroy());

const keyValue = async (key: string) => (await etcd.ctl('get', key, '--print-value-only')).trim();

function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { timeout: 30_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

test('register keeps the upstream while it runs and removes it on SIGTERM', async () => {
  const reg = startProcess(process.execPath, [BIN, 'register', '--etcd', etcd.endpoint, '--domain', 'shop.example.com', '--addr', '127.0.0.1:3001', '--id', 'shop-1', '--ttl', '2s']);
  const key = `${P}/http-services/shop/upstreams/shop-1`;
  await waitFor(async () => (await keyValue(key)) !== '', { what: 'registered', timeoutMs: 15_000 });
  assert.match(await keyValue(key), /127\.0\.0\.1:3001/);
  assert.equal(await keyValue(`${P}/http-services/shop/domain`), 'shop.example.com', 'service name derived from the domain');
  await new Promise((r) => setTimeout(r, 4500)); // past two TTLs: the lease is kept alive
  assert.notEqual(await keyValue(key), '', 'still registered after 2×TTL');
  await stopProcess(reg);
  assert.equal(reg.child.exitCode, 0);
  assert.equal(await keyValue(key), '', 'removed on SIGTERM');
});

test('register killed with SIGKILL: the upstream disappears when the TTL runs out', async () => {
  const reg = startProcess(process.execPath, [BIN, 'register', '--etcd', etcd.endpoint, '--kind', 'tcp', '--service', 'pg', '--addr', '127.0.0.1:5432', '--id', 'pg-1', '--ttl', '2s']);
  const key = `${P}/tcp-services/pg/upstreams/pg-1`;
  await waitFor(async () => (await keyValue(key)) !== '', { what: 'registered', timeoutMs: 15_000 });
  const killedAt = Date.now();
  reg.child.kill('SIGKILL');
  await waitFor(async () => (await keyValue(key)) === '', { what: 'lease expiry', timeoutMs: 15_000, intervalMs: 200 });
  const gone = Date.now() - killedAt;
  assert.ok(gone >= 500, `not removed by the registrar itself (gone after ${gone} ms)`);
});

test('register outlives an etcd outage longer than its TTL: it registers again', async (t) => {
  const reg = startProcess(process.execPath, [BIN, 'register', '--etcd', etcd.endpoint, '--service', 'cart', '--addr', '127.0.0.1:3002', '--id', 'cart-1', '--ttl', '2s']);
  t.after(() => stopProcess(reg));
  const key = `${P}/http-services/cart/upstreams/cart-1`;
  await waitFor(async () => (await keyValue(key)) !== '', { what: 'registered', timeoutMs: 15_000 });
  await etcd.kill();
  await new Promise((r) => setTimeout(r, 6000)); // three TTLs without a keepalive
  assert.equal(reg.child.exitCode, null, 'the registrar keeps running through the outage');
  await etcd.start();
  await waitFor(async () => (await keyValue(key)) !== '', { what: 'registered again after the outage', timeoutMs: 20_000, intervalMs: 250 });
  await new Promise((r) => setTimeout(r, 5000)); // past the old lease's TTL: the key rides on a live lease
  assert.notEqual(await keyValue(key), '', 'still registered');
  assert.ok(reg.output.some((l) => /registering again/.test(l)), 'says what it did');
  await stopProcess(reg);
  assert.equal(reg.child.exitCode, 0);
  assert.equal(await keyValue(key), '', 'removed on SIGTERM');
});

test('deregister removes an upstream', async () => {
  await etcd.ctl('put', `${P}/http-services/x/upstreams/a`, '127.0.0.1:1');
  const r = await cli(['deregister', '--etcd', etcd.endpoint, '--service', 'x', '--id', 'a']);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(await keyValue(`${P}/http-services/x/upstreams/a`), '');
});

test('render prints a config that haproxy -c accepts, and writes it with its maps', async (t) => {
  const dir = await tempDir('hu-render-');
  t.after(() => removeDir(dir));
  await etcd.ctl('put', `${P}/http-services/blog/domain`, 'blog.example.com');
  await etcd.ctl('put', `${P}/http-services/blog/upstreams/b1`, '127.0.0.1:4000');
  const printed = await cli(['render', '--etcd', etcd.endpoint, '--state-dir', dir, '--http-port', '8080', '--https-port', '0']);
  assert.equal(printed.code, 0, printed.stderr);
  assert.match(printed.stdout, /^backend http-blog$/m);
  assert.doesNotMatch(printed.stdout, /127\.0\.0\.1:4000/, 'addresses live in slots, not in the config');
  const out = path.join(dir, 'haproxy.cfg');
  const written = await cli(['render', '--etcd', etcd.endpoint, '--state-dir', dir, '--http-port', '8080', '--https-port', '0', '--out', out]);
  assert.equal(written.code, 0, written.stderr);
  assert.match(await readFile(path.join(dir, 'hosts.map'), 'utf8'), /^blog\.example\.com http-blog$/m);
  await execFileP(HAPROXY_BIN, ['-c', '-f', out]);
});

test('bad flags and bad input exit 2 with a message naming the flag', async () => {
  const cases: Array<[string[], RegExp]> = [
    [['run', '--http-port', '0'], /--http-port \(HAPROXY_UPDATER_HTTP_PORT\): 0 is outside 1-65535/],
    [['run', '--reload-guard', 'nft'], /--reload-guard .*'nft' is not one of none, iptables/],
    [['run', '--haproxy', 'external'], /--haproxy external needs --master-socket/],
    [['register', '--etcd', 'http://127.0.0.1:1', '--addr', '127.0.0.1:80;rm', '--service', 's'], /--addr/],
    [['register', '--etcd', 'localhost:2379', '--addr', '127.0.0.1:80', '--service', 's'], /--etcd .*is not an http\(s\):\/\/host:port URL/],
    [['status', '--bogus'], /unknown flag --bogus/],
    [['nope'], /unknown command 'nope'/],
  ];
  for (const [args, re] of cases) {
    const r = await cli(args);
    assert.equal(r.code, 2, `${args.join(' ')} → ${r.code} ${r.stderr}`);
    assert.match(r.stderr, re, args.join(' '));
  }
  const help = await cli(['run', '--help']);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /HAPROXY_UPDATER_RELOAD_GUARD/);
});
