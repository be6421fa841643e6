/**
 * Transport and framing of src/runtime/socket.ts, client.ts and master.ts against fake
 * sockets: a transcript captured from HAProxy 2.6.12 replayed byte for byte, truncated
 * conversations, timeouts, refused connections, batching, and the master's reload protocol.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { mkdtemp, rm } from 'node:fs/promises';
import * as E from '../../src/errors.js';
import * as R from '../../src/runtime/index.js';
import { fixture, startFakeSocket } from '../fixtures/runtime/fake-socket.js';

const fakes: Array<{ close(): Promise<void> }> = [];
after(() => Promise.all(fakes.map((f) => f.close())));
async function fake(opts: Parameters<typeof startFakeSocket>[0]) {
  const f = await startFakeSocket(opts);
  fakes.push(f);
  return f;
}
/** A fake worker that answers every command with `reply(commandText)` and a prompt. */
function worker(reply: (cmd: string) => string = () => '') {
  return fake({
    respond: (sock, soFar) => {
      if (!soFar.endsWith('quit\n')) return;
      const lines = soFar.split('\n').slice(1, -2); // drop `prompt`, `quit` and the final ''
      let out = '\n> ';
      let inPayload = false;
      for (const l of lines) {
        if (inPayload) {
          out += '+ ';
          if (l === '') {
            inPayload = false;
            out += '\n> ';
          }
          continue;
        }
        if (l.endsWith(' <<')) {
          inPayload = true;
          out += '+ ';
          continue;
        }
        out += reply(l) + '\n> ';
      }
      sock.end(out);
    },
  });
}

// The transcript of one interactive session (see fixture), in the order it was sent.
const transcriptCommands = (dir: string) => [
  R.showBackend(),
  R.customCommand(['set', 'server', 'b1/s1', 'weight', 'abc']),
  R.showBackend(),
  R.addMapPayload(1, `${dir}/hosts.map`, [
    { key: 'k1.test', value: 'b1' },
    { key: 'k2.test', value: 'b2' },
  ]),
  R.setServerState('b1', 's3', 'maint'),
  R.delServer('b1', 's1'),
  R.customCommand(['get', 'weight', 'b1/s1']),
];

test('a captured interactive transcript splits into one reply per command, including replies without a blank line', async () => {
  const transcript = await fixture('interactive-transcript');
  const f = await fake({ respond: (sock, soFar) => soFar.endsWith('quit\n') && sock.end(transcript) });
  const cmds = transcriptCommands('/tmp/x');
  const replies = await R.exchange({ path: f.path }, cmds);
  assert.deepEqual(replies, [
    '# name\nno-route\nb1\nb2\n',
    'Empty weight string empty or preceded by garbage',
    '# name\nno-route\nb1\nb2\n',
    '',
    '',
    'Server deleted.',
    'No such server.\n',
  ]);
  // What was written: prompt, the commands, the payload ended by an empty line, quit.
  assert.equal(
    f.text(),
    'prompt\nshow backend\nset server b1/s1 weight abc\nshow backend\nadd map @1 /tmp/x/hosts.map <<\nk1.test b1\nk2.test b2\n\n' +
      'set server b1/s3 state maint\ndel server b1/s1\nget weight b1/s1\nquit\n',
  );
  const results = await new R.RuntimeClient({ path: f.path }).batch(cmds);
  assert.deepEqual(
    results.map((r) => (r.ok ? 'ok' : r.error.code)),
    ['ok', 'E_INVALID_WEIGHT', 'ok', 'ok', 'ok', 'ok', 'E_NO_SUCH_SERVER'],
  );
  assert.equal(results[1]?.command, 'set server b1/s1 weight abc');
});

test('run returns the reply or throws the classified error', async () => {
  const f = await worker((c) => (c.startsWith('set server nope/') ? 'No such backend.\n' : c === 'show backend' ? '# name\nb1\n' : ''));
  const client = new R.RuntimeClient({ path: f.path });
  assert.deepEqual(R.parseBackendList(await client.run(R.showBackend())), ['b1']);
  await assert.rejects(client.run(R.setServerState('nope', 's1', 'ready')), (e: unknown) => e instanceof E.NoSuchBackendError && e.context.command === 'set server nope/s1 state ready');
});

test('batch: 1000 commands cost 5 connections at batchSize 200 (and 1 at 1000)', async () => {
  const f = await worker();
  const cmds = Array.from({ length: 1000 }, (_, i) => R.setServerWeight('b1', `s${(i % 50) + 1}`, i % 257));
  const before = R.connectionCount();
  const results = await new R.RuntimeClient({ path: f.path }).batch(cmds);
  assert.equal(results.length, 1000);
  assert.ok(results.every((r) => r.ok));
  assert.equal(R.connectionCount() - before, 5);
  assert.equal(f.connections(), 5);
  await new R.RuntimeClient({ path: f.path }, { batchSize: 1000 }).batch(cmds);
  assert.equal(f.connections(), 6);
  assert.deepEqual(await new R.RuntimeClient({ path: f.path }).batch([]), []);
  assert.equal(f.connections(), 6, 'an empty batch opens nothing');
});

test('connection lost mid-chunk: framed replies count, the rest fail with outcome unknown, later chunks are not sent', async () => {
  const f = await fake({
    respond: (sock, soFar) => {
      if (soFar.endsWith('quit\n')) {
        sock.write('\n> \n> No such server.\n\n> partial repl');
        sock.destroy();
      }
    },
  });
  const cmds = ['s1', 's2', 's3'].map((s) => R.setServerState('b1', s, 'maint'));
  const client = new R.RuntimeClient({ path: f.path }, { batchSize: 3 });
  const results = await client.batch([...cmds, R.showInfo(), R.showInfo()]);
  assert.equal(results.length, 5);
  assert.deepEqual(results[0], { command: 'set server b1/s1 state maint', ok: true, reply: '' });
  assert.ok(!results[1]!.ok && results[1]!.error instanceof E.NoSuchServerError);
  const third = results[2]!;
  assert.ok(!third.ok && third.error instanceof E.RuntimeConnectionError && third.error.recoverable);
  assert.equal(!third.ok && third.error.context.outcome, 'unknown');
  assert.equal(!third.ok && third.error.context.command, 'set server b1/s3 state maint');
  for (const r of results.slice(3)) {
    assert.ok(!r.ok && r.error instanceof E.RuntimeConnectionError);
    assert.equal(!r.ok && r.error.context.outcome, 'not-sent');
  }
  assert.equal(f.connections(), 1, 'the second chunk was not sent');
  await assert.rejects(R.exchange({ path: f.path }, cmds), E.RuntimeConnectionError);
});

test('deadline: a silent socket gives RuntimeTimeoutError (recoverable) after timeoutMs', async () => {
  const f = await fake({});
  const t0 = Date.now();
  await assert.rejects(
    new R.RuntimeClient({ path: f.path }, { timeoutMs: 200 }).run(R.showInfo()),
    (e: unknown) => e instanceof E.RuntimeTimeoutError && e.recoverable && e.context.phase === 'reply',
  );
  const took = Date.now() - t0;
  assert.ok(took >= 190 && took < 2000, `took ${took} ms`);
});

test('missing socket: ENOENT → RuntimeConnectionError, retried once, so a socket appearing meanwhile is used', async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'hu-nosock-'));
  after(() => rm(dir, { recursive: true, force: true }));
  const sockPath = path.join(dir, 'late.sock');
  await assert.rejects(
    new R.RuntimeClient({ path: sockPath }).run(R.showInfo()),
    (e: unknown) => e instanceof E.RuntimeConnectionError && e.recoverable && e.context.errno === 'ENOENT' && e.context.outcome === 'not-sent',
  );
  // The socket appears 50 ms after the first attempt (as during a reload): the single retry finds it.
  const server = net.createServer((s) => s.on('data', (d) => d.toString().endsWith('quit\n') && s.end('\n> ok\n\n> ')));
  after(() => new Promise<void>((r) => server.close(() => r())));
  setTimeout(() => server.listen(sockPath), 50);
  assert.equal(await new R.RuntimeClient({ path: sockPath }).run(R.showInfo()), 'ok\n');
});

test('TCP target: ECONNREFUSED → RuntimeConnectionError', async () => {
  const port = await new Promise<number>((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
  await assert.rejects(
    R.exchange({ host: '127.0.0.1', port }, [R.showInfo()]),
    (e: unknown) => e instanceof E.RuntimeConnectionError && e.context.errno === 'ECONNREFUSED' && e.context.phase === 'connect',
  );
});

test('framing errors are never misattributed', async () => {
  const tooMany = await fake({ respond: (s, t) => t.endsWith('quit\n') && s.end('\n> a\n> b\n> ') });
  const r1 = await new R.RuntimeClient({ path: tooMany.path }).batch([R.showInfo()]);
  assert.ok(!r1[0]!.ok && r1[0]!.error instanceof E.ReplyParseError);
  const noPrompt = await fake({ respond: (s, t) => t.endsWith('quit\n') && s.end('master> ') });
  await assert.rejects(R.exchange({ path: noPrompt.path }, [R.showInfo()]), E.ReplyParseError);
});

// ---------------------------------------------------------------- master

/** A fake master CLI: replies only after the client half-closes, then closes. */
function fakeMaster(answer: (cmd: string) => string | 'reset') {
  let halfClosed = 0;
  const f = fake({
    onConnect: (sock) => {
      let got = '';
      sock.on('data', (d) => (got += d.toString()));
      sock.on('end', () => {
        halfClosed++;
        const a = answer(got.trim());
        if (a === 'reset') sock.destroy();
        else sock.end(a);
      });
    },
  });
  return { f, halfClosed: () => halfClosed };
}
const proc = (reloads: number, failed: number, worker: number) =>
  `#<PID>          <type>          <reloads>       <uptime>        <version>      \n100            master          ${reloads} [failed: ${failed}]   0d00h00m51s     2.6.12-1+deb12u4\n# workers\n${worker}            worker          0               0d00h00m50s     2.6.12-1+deb12u4\n# programs\n\n`;

test('master: show proc over a half-closed connection', async () => {
  const { f, halfClosed } = fakeMaster(() => proc(4, 0, 200));
  const m = new R.MasterClient({ path: (await f).path });
  const p = await m.showProc();
  assert.deepEqual([p.masterPid, p.reloads, p.failed, p.workers[0]?.pid], [100, 4, 0, 200]);
  assert.equal(halfClosed(), 1);
});

test('master reload: success after resets during re-exec; failure; timeout', async () => {
  // success: reset twice while "re-executing", then the counter is up with a new worker
  let state = { reloads: 0, failed: 0, worker: 200, resets: 0 };
  const { f } = fakeMaster((cmd) => {
    if (cmd === 'reload') {
      state = { ...state, resets: 2 };
      return '';
    }
    if (state.resets > 0) {
      state.resets--;
      return 'reset';
    }
    return proc(state.reloads, state.failed, state.worker);
  });
  const m = new R.MasterClient({ path: (await f).path }, { timeoutMs: 500 });
  // The master's view changes 120 ms after the test starts a reload.
  const after1 = (next: Partial<typeof state>) => setTimeout(() => Object.assign(state, next), 120);
  after1({ reloads: 1, worker: 300 });
  const ok = await m.reload({ timeoutMs: 3000, pollIntervalMs: 20 });
  assert.deepEqual({ ...ok, durationMs: 0 }, { reloadsBefore: 0, reloadsAfter: 1, workerPid: 300, previousWorkerPid: 200, durationMs: 0 });

  after1({ reloads: 2, failed: 1 });
  await assert.rejects(
    m.reload({ timeoutMs: 3000, pollIntervalMs: 20 }),
    (e: unknown) => e instanceof E.ReloadFailedError && e.context.reloads === 2 && e.context.failed === 1 && !e.recoverable,
  );

  await assert.rejects(
    m.reload({ timeoutMs: 300, pollIntervalMs: 20 }),
    (e: unknown) => e instanceof E.ReloadTimeoutError && e.recoverable && e.context.reloadsBefore === 2,
  );
});
