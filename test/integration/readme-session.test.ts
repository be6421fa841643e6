/**
 * README's "Run it yourself" works as pasted: the lines of its marked code block run in bash
 * from the repository root, with the ports and /tmp paths swapped for free ones and a temp
 * dir (other sessions run tests on this machine too). `npm ci` is the one line left out: the
 * test runs from the installed tree, and reinstalling it would pull it from under the
 * other tests.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { startProcess, stopProcess, freePort, tempDir, removeDir } from '../../testkit/index.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

async function sessionLines(): Promise<string[]> {
  const readme = await readFile(new URL('README.md', `file://${ROOT}/`), 'utf8');
  const m = /<!-- SESSION:BEGIN[^\n]*-->\n```sh\n([\s\S]*?)```\n<!-- SESSION:END -->/.exec(readme);
  assert.ok(m, 'README.md has the marked session block');
  return (m[1] ?? '').split('\n').filter((l) => l.trim() !== '');
}

test("README's Run it yourself session runs as written and the curl reaches the upstream", async () => {
  const lines = await sessionLines();
  assert.equal(lines[0], 'npm ci', 'the session starts from a fresh clone');
  const dir = await tempDir('hu-readme-');
  const ports = new Map<string, string>();
  for (const p of ['2379', '2380', '3000', '8080', '9180']) ports.set(p, String(await freePort()));
  const script = lines
    .slice(1)
    .map((l) => l.replace(/\b(2379|2380|3000|8080|9180)\b/g, (p) => ports.get(p) ?? p).replace(/\/tmp\/hu-/g, `${dir}/hu-`))
    .join('\n');
  const proc = startProcess('bash', ['-c', `set -u\n${script}\n`], { cwd: ROOT, env: { ...process.env, PATH: `${process.env.PATH}:/usr/sbin:/sbin` } });
  try {
    const code = await new Promise<number | null>((resolve) => {
      const timer = setTimeout(() => resolve(-1), 90_000);
      proc.child.once('exit', (c) => {
        clearTimeout(timer);
        resolve(c);
      });
    });
    const out = proc.output.join('\n');
    const log = await readFile(`${dir}/hu-run.log`, 'utf8').catch(() => '');
    assert.equal(code, 0, `${out}\n--- run log ---\n${log}`);
    assert.ok(proc.output.includes(`hello from :${ports.get('3000')}`), `curl answered by the upstream:\n${out}`);
    assert.match(out, /^BACKEND\s+SLOT\s+UPSTREAM/m, 'status printed its table');
    assert.match(out, new RegExp(`127\\.0\\.0\\.1:${ports.get('3000')}`), 'status shows the registered upstream');
    assert.match(out, /^reload: not needed$/m, 'plan: nothing to do once run has applied it');
  } finally {
    await stopProcess(proc, 5000);
    await removeDir(dir);
  }
});
