/**
 * Large replies arrive in many socket chunks, and socket.ts frames them as they come
 * (PromptFramer) instead of joining the whole session first. These tests cut replies at
 * every kind of boundary (mid-line, mid-field, mid-prompt, mid UTF-8 sequence) and check
 * that framing and the parsers give exactly what the whole text gives.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import * as R from '../../src/runtime/index.js';
import { fixture, startFakeSocket } from '../fixtures/runtime/fake-socket.js';

const PROMPT = '\n> ';

/** Feeds `text` to a framer in the given chunk sizes (cycled), as raw UTF-8 bytes. */
function frame(text: string, sizes: readonly number[]) {
  const bytes = Buffer.from(text, 'utf8');
  const f = new R.PromptFramer();
  for (let at = 0, k = 0; at < bytes.length; k++) {
    const n = sizes[k % sizes.length]!;
    f.push(bytes.subarray(at, at + n));
    at += n;
  }
  return f.end();
}

function expected(text: string) {
  const parts = text.split(PROMPT);
  return parts.length === 1 ? { head: text, framed: [], rest: '' } : { head: parts[0], framed: parts.slice(1, -1), rest: parts.at(-1) };
}

test('PromptFramer: same parts as split(prompt) at every two-chunk cut, including mid-prompt and mid-UTF-8', () => {
  // `é` and `→` are 2 and 3 bytes: some cuts fall inside them; `>` and `\n` alone are not prompts.
  const text = `${PROMPT}a,b\nc > d${PROMPT}\n>x é→${PROMPT}${PROMPT}+ ok\n${PROMPT}tail`;
  const len = Buffer.byteLength(text);
  for (let cut = 0; cut <= len; cut++) assert.deepEqual(frame(text, [cut || len, len]), expected(text), `cut at byte ${cut}`);
  for (const size of [1, 2, 3, 5]) assert.deepEqual(frame(text, [size]), expected(text), `chunks of ${size}`);
});

test('PromptFramer: a session without any prompt is all head (not a worker CLI)', () => {
  assert.deepEqual(frame('Unknown command\n', [4]), { head: 'Unknown command\n', framed: [], rest: '' });
  assert.deepEqual(new R.PromptFramer().end(), { head: '', framed: [], rest: '' });
});

/** A `show stat` of `n` servers built from the 2.6.12 capture: its first server line, renamed. */
async function bigStat(n: number): Promise<string> {
  const lines = (await fixture('show-stat')).split('\n').filter((l) => l !== '');
  const server = lines.find((l) => l.startsWith('b1,s1,'))!;
  assert.ok(server, 'fixture has b1/s1');
  const out = [lines[0]!];
  for (let i = 0; i < n; i++) out.push(server.replace(/^b1,s1,/, `be${i % 97},srv${i},`));
  // A quoted field (HAProxy quotes a `,` in a check description): the slow path in the middle.
  out.push(server.replace(/^b1,s1,/, 'bq,"s,q",'));
  return out.join('\n') + '\n\n';
}

test('parseStat: typed columns picked from a line equal the full split, quoted lines included', async () => {
  const csv = await bigStat(3);
  const names = R.splitCsvLine(csv.split('\n')[0]!.slice(2));
  const rows = R.parseStat(csv);
  const lines = csv.split('\n').filter((l) => l.trim() !== '').slice(1);
  assert.equal(rows.length, lines.length);
  rows.forEach((row, i) => {
    const cells = R.splitCsvLine(lines[i]!);
    assert.equal(row.pxname, cells[names.indexOf('pxname')]);
    assert.equal(row.svname, cells[names.indexOf('svname')]);
    assert.equal(row.status, cells[names.indexOf('status')]);
    assert.equal(row.addr, cells[names.indexOf('addr')]);
    assert.equal(row.checkStatus, cells[names.indexOf('check_status')]);
    assert.equal(row.weight, Number(cells[names.indexOf('weight')]));
    names.forEach((n, j) => {
      if (n !== '' && names.lastIndexOf(n) === j) assert.equal(row.fields[n], cells[j], `${n} of line ${i}`);
    });
  });
  assert.equal(rows.at(-1)!.svname, 's,q');
  assert.throws(() => R.parseStat(`${csv.split('\n')[0]}\nb1,s1,0\n`), /short line/);
});

const fakes: Array<{ close(): Promise<void> }> = [];
after(() => Promise.all(fakes.map((f) => f.close())));

/** A worker that answers from `replies` by command, writing the session in `size`-byte chunks, one per tick. */
async function chunkingWorker(replies: Record<string, string>, size: number) {
  const f = await startFakeSocket({
    respond: (sock, soFar) => {
      if (!soFar.endsWith('quit\n')) return;
      const cmds = soFar.split('\n').slice(1, -2);
      const out = Buffer.from(PROMPT + cmds.map((c) => (replies[c] ?? 'Unknown command.\n') + PROMPT).join(''), 'utf8');
      let at = 0;
      const next = () => {
        if (at >= out.length) return void sock.end();
        sock.write(out.subarray(at, at + size));
        at += size;
        setImmediate(next);
      };
      next();
    },
  });
  fakes.push(f);
  return f;
}

test('observe-sized replies over a socket in odd-sized chunks parse as the whole texts do', async () => {
  const stat = await bigStat(4000); // about 1.4 MB: hundreds of chunks
  const state = await fixture('show-servers-state');
  const map = await fixture('show-map-entries');
  const replies = { 'show stat': stat, 'show servers state': state, 'show map /m/hosts.map': map };
  for (const size of [997, 65_536 + 3]) {
    const w = await chunkingWorker(replies, size);
    const [s, st, m] = await R.exchange({ path: w.path }, [R.showStat(), R.showServersState(), R.showMap('/m/hosts.map')], { timeoutMs: 20_000 });
    assert.equal(s, stat);
    assert.equal(st, state);
    assert.equal(m, map);
    const rows = R.parseStat(s!);
    assert.equal(rows.length, 4001);
    assert.deepEqual(rows.map((r) => `${r.pxname}/${r.svname} ${r.status} ${r.addr}`), R.parseStat(stat).map((r) => `${r.pxname}/${r.svname} ${r.status} ${r.addr}`));
    assert.equal(rows[3999]!.svname, 'srv3999');
    assert.deepEqual(R.parseServersState(st!).map((r) => [r.beName, r.srvName, r.srvAddr, r.srvPort, r.raw.srv_name]), R.parseServersState(state).map((r) => [r.beName, r.srvName, r.srvAddr, r.srvPort, r.srvName]));
    assert.deepEqual(R.parseMapEntries(m!), R.parseMapEntries(map));
  }
});
