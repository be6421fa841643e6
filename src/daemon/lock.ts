/**
 * One updater per state dir: `<state-dir>/updater.lock` holds the owner's PID. It appears
 * with its PID already in it (written to a private file, then hard-linked into place, which
 * fails if the lock exists), so a starter never reads an empty lock and takes it for stale. A lock whose PID is dead (a SIGKILLed updater) is
 * taken over; a live holder makes the second updater stop before it touches anything.
 */
import { mkdirSync, writeFileSync, linkSync, readFileSync, unlinkSync } from 'node:fs';
import path from 'node:path';
import { StateDirLockedError } from '../errors.js';
import { logger } from '../log.js';

const log = logger('lock');

export const LOCK_FILE = 'updater.lock';

/** The PID exists (EPERM: it does, but belongs to another user). */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: the PID exists but belongs to someone else; still a live holder.
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export interface StateDirLock {
  readonly path: string;
  /** Removes the lock file if it still names this process. Idempotent. */
  release(): void;
}

/** Takes the lock or throws StateDirLockedError naming the live holder. Synchronous: nothing else may run first. */
export function lockStateDir(stateDir: string, pid = process.pid): StateDirLock {
  mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  const lockPath = path.join(stateDir, LOCK_FILE);
  // Two rounds: a stale file is removed once, then link() decides between racing starters.
  const mine = `${lockPath}.${pid}`;
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      writeFileSync(mine, `${pid}\n`, { mode: 0o600 });
      try {
        linkSync(mine, lockPath);
      } finally {
        unlinkSync(mine);
      }
      let released = false;
      return {
        path: lockPath,
        release() {
          if (released) return;
          released = true;
          try {
            if (Number(readFileSync(lockPath, 'utf8').trim()) === pid) unlinkSync(lockPath);
          } catch {
            // Already gone: nothing to release.
          }
        },
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    let text = '';
    try {
      text = readFileSync(lockPath, 'utf8').trim();
    } catch {
      continue; // removed between our open and read: try again
    }
    const holder = Number(text);
    if (Number.isInteger(holder) && holder > 0 && holder !== pid && pidAlive(holder)) throw new StateDirLockedError(stateDir, holder, lockPath);
    log.warn({ lockPath, holder: text }, 'taking over a stale state-dir lock (its updater is gone)');
    try {
      unlinkSync(lockPath);
    } catch {
      // Someone else removed it first; link() decides.
    }
  }
  const holder = Number(readFileSync(lockPath, 'utf8').trim());
  throw new StateDirLockedError(stateDir, holder, lockPath);
}
