/**
 * Crash-safe file replacement and the write half of a config change: support files first,
 * the candidate config validated under a temporary name, then renamed into place with the
 * previous config kept as `<cfg>.prev` for rollback.
 */
import { open, rename, readFile, unlink, mkdir, stat, chmod } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { validateConfig, type ValidateOptions } from './validate.js';
import type { Rendered } from '../render/index.js';
import { logger } from '../log.js';

const log = logger('render');

/** Mode of every file the updater writes. */
export const FILE_MODE = 0o600;
/** Mode of the state directory (the HAProxy sidecar shares the updater's uid). */
export const DIR_MODE = 0o700;

/**
 * Creates `dir` (and parents) 0700, or takes group/other access away from an existing
 * one: it holds the admin and master sockets and the config with the stats password.
 */
export async function ensurePrivateDir(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true, mode: DIR_MODE });
  const st = await stat(dir);
  if ((st.mode & 0o077) === 0) return;
  const was = (st.mode & 0o777).toString(8);
  try {
    await chmod(dir, st.mode & 0o700);
    log.info({ dir, was, now: (st.mode & 0o700).toString(8) }, 'state directory was open to others: access restricted to the owner');
  } catch (err) {
    // Not ours to change (another owner): the files in it are 0600 all the same.
    log.warn({ dir, mode: was, err: (err as Error).message }, 'state directory is open to others and could not be restricted; make it 0700');
  }
}

/**
 * Writes `content` to a temp file in the same directory (same filesystem, so the rename is
 * atomic), fsyncs it, renames it over `file` and fsyncs the directory: a reader sees the
 * old or the new content, never a mix, also across a crash.
 * `mode` defaults to 0o600: haproxy.cfg holds the stats password, and its siblings (maps,
 * server state, crt-list, keys) say what runs where; HAProxy runs as the updater's uid.
 */
export async function atomicWrite(file: string, content: string | Buffer, mode = FILE_MODE): Promise<void> {
  const dir = path.dirname(file);
  const tmp = path.join(dir, `.${path.basename(file)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  const fh = await open(tmp, 'wx', mode);
  try {
    await fh.writeFile(content);
    await fh.sync();
  } catch (err) {
    await fh.close().catch(() => undefined);
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
  await fh.close();
  try {
    await rename(tmp, file);
  } catch (err) {
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
  await syncDir(dir);
}

async function syncDir(dir: string): Promise<void> {
  try {
    const d = await open(dir, 'r');
    try {
      await d.sync();
    } finally {
      await d.close();
    }
  } catch {
    // Some filesystems refuse fsync on a directory; the rename itself is still atomic.
  }
}

async function readOrNull(file: string): Promise<string | null> {
  try {
    return await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
}

/** Path of the previous config kept for rollback. */
export function prevPath(cfgPath: string): string {
  return `${cfgPath}.prev`;
}

export interface WriteOptions extends ValidateOptions {
  /** Skip `haproxy -c` (only for callers that validated the same text already). Default false. */
  skipValidation?: boolean;
}

export interface WriteResult {
  /** Whether a previous config existed (and was kept as `<cfg>.prev`). */
  hadPrevious: boolean;
  /** `[WARNING]` lines of `haproxy -c`. */
  warnings: string[];
  /**
   * Puts back the previous config and the previous support files (files that did not
   * exist before are removed). No-op for the config when there was none.
   */
  rollback(): Promise<void>;
}

/**
 * Writes the support files (HAProxy's `-c` loads them), validates the candidate config
 * under a temporary name beside `cfgPath`, then renames it into place, keeping the old one
 * as `<cfg>.prev`. If validation fails, the support files are restored and the running
 * config file is untouched (HAProxy itself never rereads files without a reload).
 */
export async function writeRendered(rendered: Rendered, cfgPath: string, opts: WriteOptions = {}): Promise<WriteResult> {
  // Snapshot the support files first so every exit path can put them back.
  const before = new Map<string, string | null>();
  for (const file of rendered.files.keys()) before.set(file, await readOrNull(file));
  const restoreFiles = async () => {
    for (const [file, content] of before) {
      if (content === null) await unlink(file).catch(() => undefined);
      else await atomicWrite(file, content);
    }
  };

  const candidate = path.join(path.dirname(cfgPath), `.${path.basename(cfgPath)}.${process.pid}.${randomBytes(4).toString('hex')}.candidate`);
  let warnings: string[] = [];
  try {
    for (const [file, content] of rendered.files) {
      await mkdir(path.dirname(file), { recursive: true });
      await atomicWrite(file, content);
    }
    await atomicWrite(candidate, rendered.config);
    if (!opts.skipValidation) warnings = (await validateConfig(candidate, opts)).warnings;
  } catch (err) {
    await unlink(candidate).catch(() => undefined);
    await restoreFiles().catch((e: unknown) => log.error({ err: e }, 'could not restore support files after a refused render'));
    throw err;
  }

  const previous = await readOrNull(cfgPath);
  if (previous !== null) {
    // A copy, not a rename: cfgPath must exist at every instant (a crash here must leave
    // HAProxy something to start from).
    await atomicWrite(prevPath(cfgPath), previous);
  }
  await rename(candidate, cfgPath);
  await syncDir(path.dirname(cfgPath));

  return {
    hadPrevious: previous !== null,
    warnings,
    rollback: async () => {
      await restoreFiles();
      if (previous !== null) await atomicWrite(cfgPath, previous);
    },
  };
}
