/**
 * `haproxy -c -f <file>`: the only authority on whether HAProxy 2.6 accepts a config.
 * It parses the config and loads the files it names (maps, pattern files, certificates),
 * but binds nothing, so a port conflict still shows only at reload (see reload.ts).
 */
import { execFile } from 'node:child_process';
import { ConfigError, ConfigInvalidError } from '../errors.js';
import { versionFromHaproxyV } from '../runtime/capabilities.js';
import { childEnv } from '../childenv.js';

export interface ValidateOptions {
  /** HAProxy executable. Default `haproxy` (from PATH). */
  haproxyBin?: string;
  /** Kill `haproxy -c` after this long. Default 30000 ms (large crt directories load slowly). */
  timeoutMs?: number;
}

export interface ValidateResult {
  /** `[WARNING]` lines HAProxy printed for an accepted config. */
  warnings: string[];
}

const MAX_OUTPUT = 4 * 1024 * 1024;

/** Resolves when HAProxy accepts the config; throws ConfigInvalidError with its `[ALERT]` lines otherwise. */
export async function validateConfig(configPath: string, opts: ValidateOptions = {}): Promise<ValidateResult> {
  const bin = opts.haproxyBin ?? 'haproxy';
  const { code, stdout, stderr, error } = await new Promise<{ code: number | null; stdout: string; stderr: string; error: NodeJS.ErrnoException | null }>(
    (resolve) => {
      // Argument array, no shell: the path is never interpreted.
      execFile(bin, ['-c', '-f', configPath], { env: childEnv(), timeout: opts.timeoutMs ?? 30_000, maxBuffer: MAX_OUTPUT, encoding: 'utf8' }, (err, out, errOut) => {
        const e = err as (NodeJS.ErrnoException & { code?: unknown; killed?: boolean }) | null;
        resolve({ code: e ? (typeof e.code === 'number' ? e.code : null) : 0, stdout: out, stderr: errOut, error: e });
      });
    },
  );
  if (error && typeof error.code === 'string') {
    // ENOENT/EACCES: the binary, not the config, is the problem.
    throw new ConfigError(`cannot run ${bin} -c: ${error.message}`, { haproxyBin: bin, errno: error.code }, { cause: error });
  }
  const lines = `${stderr}\n${stdout}`.split('\n').map((l) => l.trim()).filter(Boolean);
  const warnings = lines.filter((l) => l.includes('[WARNING]'));
  if (code === 0) return { warnings };
  const alerts = lines.filter((l) => l.includes('[ALERT]'));
  const detail = alerts.length ? alerts : lines.slice(-10);
  const why = error && (error as { killed?: boolean }).killed ? `timed out after ${opts.timeoutMs ?? 30_000} ms` : `exit code ${code}`;
  throw new ConfigInvalidError(`haproxy -c rejected ${configPath} (${why}): ${detail.map(stripPrefix).join(' | ')}`, {
    configPath,
    exitCode: code,
    alerts,
    warnings,
  });
}

/** `[ALERT]    (123) : config : parsing [...]` → `config : parsing [...]`. */
export function stripPrefix(line: string): string {
  return line.replace(/^\[(ALERT|WARNING|NOTICE)\]\s*\(\d+\)\s*:\s*/, '');
}

/** `<bin> -v` → the version it prints (`3.2.26-1`); null when it does not run or says something else. */
export async function haproxyVersion(bin = 'haproxy'): Promise<string | null> {
  return new Promise((resolve) => {
    execFile(bin, ['-v'], { env: childEnv(), timeout: 10_000, encoding: 'utf8' }, (err, out) => resolve(err ? null : versionFromHaproxyV(out)));
  });
}
