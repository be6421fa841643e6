/**
 * `npm run demo` in its short mode, as a newcomer runs it: the real demo script as a child
 * process (etcd, the updater with its managed HAProxy, self-registering apps, traffic, the
 * whole story). Asserts its exit code, the numbers of its machine-readable summary line and
 * that no process it started survives it; and that Ctrl-C (SIGINT) ends it at once.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

interface DemoSummary {
  ok: number;
  failed: number;
  failures: Record<string, number>;
  perHost: Record<string, { ok: number; failed: number }>;
  membershipReloads: number;
  structuralReloads: number;
  setupReloads: number;
  runtimeCommands: number;
  convergenceP50Ms: number;
  convergenceMaxMs: number;
  convergence: { what: string; ms: number }[];
  registrarRestarts: number;
  steps: number;
  aborted: boolean;
  error: string | null;
  statsUrl: string;
  statsPassword: string;
  pids: { haproxy: number[]; etcd: number[]; updater: number; registrars: number[] };
  leftover: number[];
  pass: boolean;
}

/** The command name of a live (non-zombie) process, or null. */
function comm(pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    if (stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) === 'Z') return null;
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return null;
  }
}

interface DemoRun {
  child: ChildProcess;
  /** Output so far. */
  readonly stdout: string;
  readonly stderr: string;
  closed: Promise<{ code: number | null; signal: string | null; stdout: string; stderr: string }>;
}

/** The demo as `npm run demo` starts it; SIGINT after `timeoutMs` (the demo cleans up), SIGKILL 15 s later. */
function spawnDemo(args: string[], timeoutMs: number): DemoRun {
  const child = spawn(process.execPath, ['--import', 'tsx', 'scripts/demo/main.ts', ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (c: Buffer) => (stdout += c.toString('utf8')));
  child.stderr!.on('data', (c: Buffer) => (stderr += c.toString('utf8')));
  const timer = setTimeout(() => {
    child.kill('SIGINT');
    setTimeout(() => child.kill('SIGKILL'), 15_000).unref();
  }, timeoutMs);
  const closed = new Promise<{ code: number | null; signal: string | null; stdout: string; stderr: string }>((resolve) =>
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    }),
  );
  return {
    child,
    get stdout() {
      return stdout;
    },
    get stderr() {
      return stderr;
    },
    closed,
  };
}

function runDemo(args: string[], timeoutMs: number) {
  return spawnDemo(args, timeoutMs).closed;
}

function summaryOf(stdout: string): DemoSummary | null {
  const line = stdout.split('\n').filter((l) => l.startsWith('DEMO-SUMMARY ')).at(-1);
  return line ? (JSON.parse(line.slice('DEMO-SUMMARY '.length)) as DemoSummary) : null;
}

/** PIDs of the summary that still run a process of the kind the demo started there. */
function alivePids(s: DemoSummary): number[] {
  return [
    ...s.pids.haproxy.filter((p) => comm(p)?.startsWith('haproxy')),
    ...s.pids.etcd.filter((p) => comm(p)?.startsWith('etcd')),
    ...[s.pids.updater, ...s.pids.registrars].filter((p) => p && comm(p)?.startsWith('node')),
  ];
}

test('npm run demo -- --short: 0 failed requests, 0 reloads for membership changes, nothing left running', { timeout: 180_000 }, async (t) => {
  const r = await runDemo(['--short'], 120_000);
  const tail = `\n--- stdout (tail) ---\n${r.stdout.split('\n').slice(-60).join('\n')}\n--- stderr ---\n${r.stderr.slice(-3000)}`;
  const s = summaryOf(r.stdout);
  assert.ok(s, `no DEMO-SUMMARY line${tail}`);
  t.diagnostic(
    `ok=${s.ok} failed=${s.failed} membershipReloads=${s.membershipReloads} structuralReloads=${s.structuralReloads} setupReloads=${s.setupReloads} runtimeCommands=${s.runtimeCommands} convergence p50=${s.convergenceP50Ms}ms max=${s.convergenceMaxMs}ms registrarRestarts=${s.registrarRestarts}`,
  );
  assert.equal(r.code, 0, `demo exit code ${r.code} (signal ${r.signal})${tail}`);
  assert.equal(s.error, null, tail);
  assert.equal(s.steps, 6, 'the whole story played');
  assert.equal(s.failed, 0, `failed requests ${JSON.stringify(s.failures)}${tail}`);
  assert.equal(s.membershipReloads, 0, `no reload for membership changes${tail}`);
  assert.ok(s.structuralReloads >= 1, `the new service cost a reload (HAProxy's counter): ${s.structuralReloads}`);
  assert.ok(s.ok > 1000, `enough traffic went through: ${s.ok}`);
  for (const host of ['shop.localhost', 'store.localhost', 'api.localhost']) {
    assert.ok((s.perHost[host]?.ok ?? 0) > 0, `${host} served traffic`);
  }
  assert.ok(s.runtimeCommands > 0, 'membership changes went over the Runtime API');
  assert.ok(s.convergence.length >= 5, 'convergence measured for the changes');
  assert.match(s.statsUrl, /^http:\/\/127\.0\.0\.1:\d+\/admin\?stats$/);
  assert.ok(s.statsPassword.length >= 12, 'a generated stats password is reported');
  assert.match(r.stdout, /stats page\s+http:\/\/127\.0\.0\.1:\d+\/admin\?stats\s+user admin\s+password \S+/);

  // Nothing the demo started survives it (checked by command name against PID reuse).
  assert.ok(s.pids.haproxy.length >= 2, `haproxy master and worker PIDs reported: ${s.pids.haproxy.join(',')}`);
  assert.ok(s.pids.etcd.length >= 2, `etcd PIDs (before and after the outage) reported: ${s.pids.etcd.join(',')}`);
  assert.deepEqual(s.leftover, []);
  const alive = alivePids(s);
  assert.deepEqual(alive, [], `processes left running: ${alive.join(',')}`);
});

test('Ctrl-C mid-story: traffic and processes stop at once, summary says aborted, exit 130, no stack trace', { timeout: 120_000 }, async () => {
  const run = spawnDemo(['--short'], 100_000);
  // Mid-story: the scale-up of step 2 has started registrars and apps.
  const deadline = Date.now() + 90_000;
  while (!/started app shop-5 /.test(run.stdout) && run.child.exitCode === null && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  assert.match(run.stdout, /started app shop-5 /, `the story did not reach step 2\n${run.stdout}\n${run.stderr}`);
  const sentAt = Date.now();
  run.child.kill('SIGINT');
  const r = await run.closed;
  const tookMs = Date.now() - sentAt;
  const tail = `\n--- stdout (tail) ---\n${r.stdout.split('\n').slice(-30).join('\n')}\n--- stderr ---\n${r.stderr.slice(-3000)}`;
  assert.equal(r.code, 130, `exit code ${r.code} (signal ${r.signal})${tail}`);
  assert.ok(tookMs < 3000, `exited ${tookMs} ms after SIGINT${tail}`);
  assert.match(r.stdout, /aborted/);
  assert.match(r.stdout, /^result\s+ABORTED/m);
  const output = r.stdout + r.stderr;
  assert.doesNotMatch(output, /^\s+at .+:\d+:\d+\)?$/m, `a stack trace was printed${tail}`);
  assert.doesNotMatch(output, /"stack":/, `a JSON stack trace was printed${tail}`);
  const s = summaryOf(r.stdout);
  assert.ok(s, `no DEMO-SUMMARY line${tail}`);
  assert.equal(s.aborted, true);
  assert.equal(s.steps, 2, 'stopped in the step it was in');
  assert.ok(s.ok > 0, 'what was measured so far is reported');
  // The PIDs it had started by then: etcd, the updater, HAProxy master and worker, five registrars.
  assert.ok(s.pids.etcd.length >= 1 && s.pids.updater > 0 && s.pids.haproxy.length >= 2 && s.pids.registrars.length >= 5, JSON.stringify(s.pids));
  assert.deepEqual(s.leftover, []);
  const alive = alivePids(s);
  assert.deepEqual(alive, [], `processes left running: ${alive.join(',')}`);
});

test('npm run demo -- --cluster --short: two load balancers, etcd leader killed, 0 failed, no process or namespace left', { timeout: 150_000, skip: process.getuid?.() !== 0 ? 'the cluster demo builds network namespaces: needs root' : false }, async (t) => {
  const r = await runDemo(['--cluster', '--short'], 110_000);
  const tail = `\n--- stdout (tail) ---\n${r.stdout.split('\n').slice(-60).join('\n')}\n--- stderr ---\n${r.stderr.slice(-3000)}`;
  const line = r.stdout.split('\n').filter((l) => l.startsWith('DEMO-SUMMARY ')).at(-1);
  assert.ok(line, `no DEMO-SUMMARY line${tail}`);
  const s = JSON.parse(line.slice('DEMO-SUMMARY '.length)) as {
    ok: number;
    failed: number;
    failures: unknown;
    membershipReloads: number;
    structuralReloads: number;
    changes: { what: string; first: number; last: number }[];
    failoverMs: number | null;
    steps: number;
    error: string | null;
    netPrefix: string;
    pids: number[];
    leftover: number[];
    leftoverNamespaces: string[];
  };
  t.diagnostic(`ok=${s.ok} failed=${s.failed} failoverMs=${s.failoverMs} spreads=${s.changes.map((c) => c.last - c.first).join(',')}`);
  assert.equal(r.code, 0, `exit code ${r.code} (signal ${r.signal})${tail}`);
  assert.equal(s.error, null, tail);
  assert.equal(s.steps, 6, 'the whole story played');
  assert.equal(s.failed, 0, `failed requests ${JSON.stringify(s.failures)}${tail}`);
  assert.ok(s.ok > 100, `traffic went through both load balancers: ${s.ok}`);
  assert.equal(s.membershipReloads, 0, 'no reload for membership changes');
  assert.ok(s.structuralReloads >= 2, `the new service reloaded each instance: ${s.structuralReloads}`);
  assert.ok(s.failoverMs !== null && s.failoverMs > 0, 'the change written during the leader failover reached both');
  // Nothing left: checked here, not only by the demo's own account.
  const netns = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout;
  assert.ok(s.netPrefix && !netns.includes(s.netPrefix), `namespaces left: ${netns}`);
  assert.ok(s.pids.length >= 6, `PIDs reported: ${s.pids.join(',')}`);
  const alive = s.pids.filter((p) => ['etcd', 'node', 'haproxy'].includes(comm(p) ?? ''));
  assert.deepEqual(alive, [], `processes left running: ${alive.join(',')}`);
});
