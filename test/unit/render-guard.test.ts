/**
 * Reload guards against a fake `iptables` executable (a static node script keeping its
 * rules in a file), so argv and clean-up logic are tested without privileges. The real
 * iptables runs in test/integration/render-guard.test.ts, inside a network namespace.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { GuardError, InvalidArgumentError } from '../../src/errors.js';
import { createGuard, IptablesGuard, NoGuard } from '../../src/reload/index.js';

// Fake iptables: `-S <chain>` lists, `-I <chain> ...` prepends, `-D <chain> ...` deletes an
// exact spec; every call is appended to calls.log. FAKE_IPT_FAIL=perm simulates no CAP_NET_ADMIN.
const FAKE = `#!/usr/bin/env node
const fs = require('node:fs');
const path = require('node:path');
const dir = __dirname;
const rulesFile = path.join(dir, 'rules.json');
const args = process.argv.slice(2);
fs.appendFileSync(path.join(dir, 'calls.log'), JSON.stringify(args) + '\\n');
if (process.env.FAKE_IPT_FAIL === 'perm') { process.stderr.write('iptables v1.8.9 (nf_tables): Could not fetch rule set generation id: Permission denied (you must be root)\\n'); process.exit(4); }
const rules = fs.existsSync(rulesFile) ? JSON.parse(fs.readFileSync(rulesFile, 'utf8')) : [];
const a = args[0] === '-w' ? args.slice(1) : args;
const op = a[0], chain = a[1], spec = a.slice(2).join(' ');
if (op === '-S') { process.stdout.write('-P ' + chain + ' ACCEPT\\n' + rules.filter(r => r.startsWith('-A ' + chain + ' ')).join('\\n') + (rules.length ? '\\n' : '')); process.exit(0); }
if (op === '-I') { rules.unshift('-A ' + chain + ' ' + spec); }
else if (op === '-D') { const i = rules.indexOf('-A ' + chain + ' ' + spec); if (i < 0) { process.stderr.write('iptables: Bad rule (does a matching rule exist in that chain?).\\n'); process.exit(1); } rules.splice(i, 1); }
else { process.stderr.write('unsupported\\n'); process.exit(2); }
fs.writeFileSync(rulesFile, JSON.stringify(rules));
`;

async function fakeIptables(t: { after(fn: () => Promise<void>): void }, initialRules: string[] = []) {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'hu-fake-ipt-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const bin = path.join(dir, 'iptables');
  await writeFile(bin, FAKE);
  await chmod(bin, 0o755);
  await writeFile(path.join(dir, 'rules.json'), JSON.stringify(initialRules));
  return {
    bin,
    rules: async (): Promise<string[]> => JSON.parse(await readFile(path.join(dir, 'rules.json'), 'utf8')),
    calls: async (): Promise<string[][]> =>
      (await readFile(path.join(dir, 'calls.log'), 'utf8').catch(() => ''))
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l)),
  };
}

const OTHER = '-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT';
const STALE = '-A INPUT -p tcp -m multiport --dports 80 --syn -m comment --comment haproxy-updater-guard -j DROP';

test('iptables guard: init removes stale tagged rules only; engage/release add and remove tagged SYN drops', async (t) => {
  const ipt = await fakeIptables(t, [OTHER, STALE, STALE]);
  const guard = new IptablesGuard({ iptables: ipt.bin });
  assert.equal(guard.kind, 'iptables');
  await guard.init();
  assert.deepEqual(await ipt.rules(), [OTHER]);

  await guard.engage([443, 80, 80]);
  const rules = await ipt.rules();
  assert.equal(rules.length, 2);
  assert.equal(rules[0], '-A INPUT -p tcp -m multiport --dports 80,443 --syn -m comment --comment haproxy-updater-guard -j DROP');
  const insert = (await ipt.calls()).find((c) => c.includes('-I'));
  assert.deepEqual(insert, ['-w', '-I', 'INPUT', '-p', 'tcp', '-m', 'multiport', '--dports', '80,443', '--syn', '-m', 'comment', '--comment', 'haproxy-updater-guard', '-j', 'DROP']);

  await guard.release();
  assert.deepEqual(await ipt.rules(), [OTHER]);
  await guard.release(); // always safe
  assert.deepEqual(await ipt.rules(), [OTHER]);
});

test('iptables guard: more than 15 ports are split over several multiport rules; other tags are left alone', async (t) => {
  const foreign = '-A INPUT -p tcp -m comment --comment someone-else -j DROP';
  const ipt = await fakeIptables(t, [foreign]);
  const guard = new IptablesGuard({ iptables: ipt.bin, tag: 'hu-test' });
  const ports = Array.from({ length: 20 }, (_, i) => 10_000 + i);
  await guard.engage(ports);
  const mine = (await ipt.rules()).filter((r) => r.includes('--comment hu-test'));
  assert.equal(mine.length, 2);
  await guard.release();
  assert.deepEqual(await ipt.rules(), [foreign]);
});

test('iptables guard: clear GuardError when iptables is missing or not permitted; ports and names validated', async (t) => {
  await assert.rejects(new IptablesGuard({ iptables: '/nonexistent/iptables' }).init(), (e: unknown) => e instanceof GuardError && /not found/.test(e.message));
  const ipt = await fakeIptables(t);
  const env = { PATH: process.env.PATH, FAKE_IPT_FAIL: 'perm' };
  await assert.rejects(new IptablesGuard({ iptables: ipt.bin, env }).init(), (e: unknown) => e instanceof GuardError && /no permission/.test(e.message));
  // Guard none: nothing to clean up where iptables is absent or forbidden, and no error.
  await new NoGuard({ iptables: '/nonexistent/iptables' }).init();
  await new NoGuard({ iptables: ipt.bin, env }).init();
  await assert.rejects(new IptablesGuard({ iptables: ipt.bin }).engage([0]), InvalidArgumentError);
  assert.throws(() => new IptablesGuard({ netns: 'ns; reboot' }), InvalidArgumentError);
  assert.throws(() => new IptablesGuard({ tag: 'a b' }), InvalidArgumentError);
});

test('iptables guard in a netns prefixes argv with ip netns exec', async (t) => {
  // A fake `ip` that records its argv and runs the rest (`netns exec <ns> <cmd...>`).
  const ipt = await fakeIptables(t);
  const dir = path.dirname(ipt.bin);
  const ip = path.join(dir, 'ip');
  await writeFile(
    ip,
    `#!/usr/bin/env node
const fs = require('node:fs');
fs.appendFileSync(__dirname + '/ip.log', JSON.stringify(process.argv.slice(2)) + '\\n');
const r = require('node:child_process').spawnSync(process.argv[5], process.argv.slice(6), { stdio: 'inherit' });
process.exit(r.status ?? 1);
`,
  );
  await chmod(ip, 0o755);
  const guard = new IptablesGuard({ iptables: ipt.bin, ip, netns: 'hu-test-ns' });
  await guard.engage([8080]);
  await guard.release();
  const calls = (await readFile(path.join(dir, 'ip.log'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as string[]);
  assert.ok(calls.length >= 3);
  for (const c of calls) assert.deepEqual(c.slice(0, 4), ['netns', 'exec', 'hu-test-ns', ipt.bin]);
  assert.deepEqual(await ipt.rules(), []);
});

test('createGuard; guard none removes stale tagged rules at init (iptables and ip6tables) and adds none', async (t) => {
  const ipt = await fakeIptables(t, [OTHER, STALE]);
  const ip6 = await fakeIptables(t, [STALE]);
  const none = createGuard('none', { iptables: ipt.bin, ip6tables: ip6.bin });
  assert.ok(none instanceof NoGuard);
  assert.equal(none.kind, 'none');
  await none.init();
  assert.deepEqual(await ipt.rules(), [OTHER]);
  assert.deepEqual(await ip6.rules(), []);
  await none.engage([80]);
  assert.deepEqual(await ipt.rules(), [OTHER]);
  await none.release();
  assert.ok(createGuard('iptables', { netns: 'x' }) instanceof IptablesGuard);
  assert.throws(() => createGuard('pf'), InvalidArgumentError);
});

test('guard marker: an engaged iptables guard leaves it until released; guard none sweeps only when a crash left it', async (t) => {
  const ipt = await fakeIptables(t, [OTHER, STALE]);
  const ip6 = await fakeIptables(t, []);
  const markerPath = path.join(path.dirname(ipt.bin), 'guard-engaged');
  // No marker: this state dir never guarded, so guard none leaves the firewall alone.
  await createGuard('none', { iptables: ipt.bin, ip6tables: ip6.bin, markerPath }).init();
  assert.deepEqual(await ipt.rules(), [OTHER, STALE]);
  const guard = new IptablesGuard({ iptables: ipt.bin, ip6tables: ip6.bin, markerPath });
  await guard.init();
  assert.deepEqual(await ipt.rules(), [OTHER]);
  await guard.engage([8080]);
  assert.equal(await readFile(markerPath, 'utf8'), `${process.pid}\n`, 'marker written while engaged');
  // A crash here leaves rule and marker: the next start in mode none removes both.
  await createGuard('none', { iptables: ipt.bin, ip6tables: ip6.bin, markerPath }).init();
  assert.deepEqual(await ipt.rules(), [OTHER]);
  await assert.rejects(readFile(markerPath), /ENOENT/);
  await guard.engage([8080]);
  await guard.release();
  await assert.rejects(readFile(markerPath), /ENOENT/, 'marker removed with the rules');
});

test('iptables guard with ipv6 (dual-stack listeners) drops SYNs in ip6tables too; without, ip6tables is only cleaned', async (t) => {
  const ipt = await fakeIptables(t);
  const ip6 = await fakeIptables(t, [STALE]);
  const v4only = new IptablesGuard({ iptables: ipt.bin, ip6tables: ip6.bin });
  await v4only.init();
  assert.deepEqual(await ip6.rules(), [], 'stale ip6tables rule removed although this run guards IPv4 only');
  await v4only.engage([8080]);
  assert.equal((await ipt.rules()).length, 1);
  assert.deepEqual(await ip6.rules(), []);
  await v4only.release();

  const dual = new IptablesGuard({ iptables: ipt.bin, ip6tables: ip6.bin, ipv6: true });
  await dual.init();
  await dual.engage([8080, 8443]);
  for (const r of [await ipt.rules(), await ip6.rules()]) {
    assert.deepEqual(r, ['-A INPUT -p tcp -m multiport --dports 8080,8443 --syn -m comment --comment haproxy-updater-guard -j DROP']);
  }
  await dual.release();
  assert.deepEqual([...(await ipt.rules()), ...(await ip6.rules())], []);
});
