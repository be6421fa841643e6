import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, writeFile, readdir, rm } from 'node:fs/promises';
import { spawnSync } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { lockStateDir, LOCK_FILE } from '../../src/daemon/lock.js';
import { StateDirLockedError } from '../../src/errors.js';

test('the state-dir lock: held with its PID, refused to a second live owner, taken over from a dead one, released', async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'hu-lock-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const lockPath = path.join(dir, LOCK_FILE);

  const lock = lockStateDir(dir, process.pid);
  assert.equal((await readFile(lockPath, 'utf8')).trim(), String(process.pid));
  assert.deepEqual(await readdir(dir), [LOCK_FILE], 'no private file left beside the lock');
  // Another (live) process asking: refused, naming the holder.
  assert.throws(() => lockStateDir(dir, process.ppid), (err: unknown) => err instanceof StateDirLockedError && String(err.message).includes(String(process.pid)));
  lock.release();
  await assert.rejects(readFile(lockPath, 'utf8'), { code: 'ENOENT' });

  // A lock left by a process that is gone is taken over.
  const dead = spawnSync(process.execPath, ['-e', '0']).pid!;
  await writeFile(lockPath, `${dead}\n`);
  const taken = lockStateDir(dir, process.pid);
  assert.equal((await readFile(lockPath, 'utf8')).trim(), String(process.pid));
  // Release only removes a lock that still names us.
  await writeFile(lockPath, `${process.ppid}\n`);
  taken.release();
  assert.equal((await readFile(lockPath, 'utf8')).trim(), String(process.ppid));
});
