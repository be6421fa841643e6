/**
 * CertSync: brings HAProxy's certificates in line with a directory of PEM files over the
 * Runtime API, with no reload.
 *
 *   new file     → new ssl cert + set ssl cert + commit ssl cert + add ssl crt-list
 *   changed file → set ssl cert + commit ssl cert
 *   removed file → del ssl crt-list + del ssl cert
 *
 * Every file is validated first (src/certs/pem.ts). A bad file is rejected alone, with its
 * path and reason; the certificate it would replace keeps serving. A file that looks
 * incomplete and was modified moments ago is retried once it has settled, and a rejection
 * is never final: any later change to the file is looked at again.
 *
 * HAProxy never reads the watched directory. Each accepted PEM is copied into `storeDir`
 * and HAProxy's certificate names are those copies; the crt-list file lists them. A reload
 * therefore serves exactly what was last accepted, and a broken file in the watched
 * directory can never make a reload fail.
 *
 * Passes are whole comparisons (directory vs. what HAProxy holds, by content hash), so a
 * lost file event is repaired by the next `verify()`. File events only trigger passes,
 * debounced.
 */
import { watch, type FSWatcher } from 'node:fs';
import { mkdir, readdir, readFile, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { CertFileError, type UpdaterError } from '../errors.js';
import { logger } from '../log.js';
import { atomicWrite } from '../reload/files.js';
import type { RuntimeClient } from '../runtime/client.js';
import { commandBytes, payloadLimit } from '../runtime/command.js';
import {
  abortSslCert,
  addSslCrtList,
  commitSslCert,
  delSslCert,
  delSslCrtList,
  newSslCert,
  parseAddSslCrtList,
  parseCommitSslCert,
  parseNewSslCert,
  parseSetSslCert,
  parseSslCertInfo,
  parseSslCertList,
  parseSslConfirmation,
  parseSslCrtList,
  setSslCert,
  showSslCert,
  showSslCerts,
  showSslCrtList,
  type CrtListLine,
} from '../runtime/ssl.js';
import { renderCrtList } from './crtlist.js';
import { mayBeIncomplete, validatePem, type PemOk } from './pem.js';

const log = logger('certs');

export interface CertSyncOptions {
  /** Directory of `*.pem` files to serve (symlinks followed, hidden entries ignored). */
  dir: string;
  /** Directory for the accepted copies HAProxy loads at (re)start; created if missing. */
  storeDir: string;
  /** The crt-list file the HAProxy bind reads (`bind ... ssl crt-list <file>`). */
  crtList: string;
  client: RuntimeClient;
  /** Certificate served when no SNI matches: first line of the crt-list, never touched. Default: none. */
  defaultCert?: string;
  /** Quiet time after a file event before a pass, ms. Default 200. */
  debounceMs?: number;
  /** A file that looks incomplete and is younger than this is retried, not rejected, ms. Default 5000. */
  settleMs?: number;
  /** Interval of the full comparison that repairs lost events, ms; 0 = only on `verify()`. Default 30000. */
  verifyIntervalMs?: number;
  /** Runs a pass: give the daemon's queue so every HAProxy change goes through one consumer. Default: in order, one at a time. */
  schedule?: (task: () => Promise<void>) => Promise<void>;
  /** Clock for expiry checks. Default: `() => new Date()`. */
  now?: () => Date;
  /** Called after every pass (metrics). */
  onPass?: (result: PassResult) => void;
}

export interface ServedCert {
  /** HAProxy's certificate name: the copy in `storeDir`. */
  name: string;
  /** The file in the watched directory it came from. */
  source: string;
  /** sha256 of the normalised PEM of the file it came from. */
  hash: string;
  sha1: string;
  notAfter: Date;
}

export interface PassResult {
  added: string[];
  updated: string[];
  removed: string[];
  /** Files refused in this pass (each also logged once per content). */
  rejected: CertFileError[];
  /** Files that look half-written and will be looked at again. */
  pending: string[];
  /** Runtime steps HAProxy refused for a valid file (the file is retried next pass). */
  failed: CertFileError[];
  /** Failed updates counted in this pass (`status().failedUpdates`), with a short reason: a PemProblem, `runtime` or `remove`. */
  failures: Array<{ path: string; reason: string }>;
  durationMs: number;
}

/** File names taken from the directory: they become paths in commands and the crt-list. */
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._+-]{0,200}\.pem$/;

interface Desired {
  source: string;
  name: string;
  pem: PemOk;
}

export class CertSync {
  readonly #o: Required<Omit<CertSyncOptions, 'defaultCert' | 'schedule' | 'onPass'>> & Pick<CertSyncOptions, 'defaultCert' | 'onPass'>;
  readonly #schedule: (task: () => Promise<void>) => Promise<void>;
  #chain: Promise<void> = Promise.resolve();
  /** Set while a pass is queued and not started: further requests join it. */
  #queued: Promise<PassResult> | null = null;
  readonly #served = new Map<string, ServedCert>();
  /** source path → hash of the raw text last rejected (log once per content). */
  readonly #rejectedRaw = new Map<string, string>();
  readonly #rejected = new Map<string, CertFileError>();
  #failedUpdates = 0;
  #watcher: FSWatcher | null = null;
  #debounce: NodeJS.Timeout | null = null;
  #retry: NodeJS.Timeout | null = null;
  #interval: NodeJS.Timeout | null = null;
  #stopped = false;
  #inflight: Promise<PassResult> | null = null;

  constructor(opts: CertSyncOptions) {
    this.#o = {
      debounceMs: 200,
      settleMs: 5000,
      verifyIntervalMs: 30_000,
      now: () => new Date(),
      ...opts,
      dir: path.resolve(opts.dir),
      storeDir: path.resolve(opts.storeDir),
      crtList: path.resolve(opts.crtList),
    };
    this.#schedule =
      opts.schedule ??
      ((task) => {
        const run = this.#chain.then(task);
        this.#chain = run.catch(() => undefined);
        return run;
      });
  }

  /** Runs the first pass (all certificates in one go), then watches the directory. */
  async start(): Promise<PassResult> {
    await mkdir(this.#o.storeDir, { recursive: true, mode: 0o700 });
    const first = await this.verify();
    if (this.#stopped) return first;
    try {
      this.#watcher = watch(this.#o.dir, { persistent: false }, () => this.#onEvent());
      this.#watcher.on('error', (err) => log.warn({ err, dir: this.#o.dir }, 'watching the certificates directory failed; relying on verify passes'));
    } catch (err) {
      log.warn({ err, dir: this.#o.dir }, 'cannot watch the certificates directory; relying on verify passes');
    }
    if (this.#o.verifyIntervalMs > 0) {
      this.#interval = setInterval(() => this.#background(), this.#o.verifyIntervalMs);
      this.#interval.unref();
    }
    return first;
  }

  /** Stops watching and timers; resolves when a pass in flight has finished. */
  async stop(): Promise<void> {
    this.#stopped = true;
    this.#watcher?.close();
    this.#watcher = null;
    for (const t of [this.#debounce, this.#retry]) if (t) clearTimeout(t);
    if (this.#interval) clearInterval(this.#interval);
    await this.#inflight?.catch(() => undefined);
  }

  /** A full comparison pass now (joins one already queued). */
  verify(): Promise<PassResult> {
    if (this.#queued) return this.#queued;
    let resolveOut!: (r: PassResult) => void;
    let rejectOut!: (e: unknown) => void;
    const out = new Promise<PassResult>((res, rej) => {
      resolveOut = res;
      rejectOut = rej;
    });
    this.#queued = out;
    void this.#schedule(async () => {
      this.#queued = null;
      this.#inflight = out;
      try {
        resolveOut(await this.#pass());
      } catch (err) {
        rejectOut(err);
      } finally {
        this.#inflight = null;
      }
    }).catch(rejectOut);
    return out;
  }

  /** What HAProxy serves from the directory, by certificate name. */
  served(): ReadonlyMap<string, ServedCert> {
    return this.#served;
  }

  /** Files currently refused, by source path. */
  rejected(): ReadonlyMap<string, CertFileError> {
    return this.#rejected;
  }

  /** For metrics: certificates served, the soonest expiry, failed updates so far. */
  status(): { served: number; soonestNotAfter: Date | null; failedUpdates: number; rejected: number } {
    let soonest: Date | null = null;
    for (const c of this.#served.values()) if (!soonest || c.notAfter < soonest) soonest = c.notAfter;
    return { served: this.#served.size, soonestNotAfter: soonest, failedUpdates: this.#failedUpdates, rejected: this.#rejected.size };
  }

  #onEvent(): void {
    if (this.#stopped) return;
    if (this.#debounce) clearTimeout(this.#debounce);
    this.#debounce = setTimeout(() => {
      this.#debounce = null;
      this.#background();
    }, this.#o.debounceMs);
  }

  #background(): void {
    if (this.#stopped) return;
    this.verify().catch((err: UpdaterError) => log.warn({ err, code: err.code }, 'certificate pass failed; the next event or verify pass retries'));
  }

  #retryAt(ms: number): void {
    if (this.#retry || this.#stopped) return;
    this.#retry = setTimeout(() => {
      this.#retry = null;
      this.#background();
    }, Math.max(50, ms));
  }

  /** One full pass: read the directory, read HAProxy, apply the difference, rewrite the crt-list. */
  async #pass(): Promise<PassResult> {
    const started = performance.now();
    const result: PassResult = { added: [], updated: [], removed: [], rejected: [], pending: [], failed: [], failures: [], durationMs: 0 };
    const { desired, keep } = await this.#readDir(result);
    const client = this.#o.client;

    // What HAProxy holds: certificate names, the open transaction, the crt-list's lines.
    const [certListReply, crtListReply] = await Promise.all([client.run(showSslCerts()), client.run(showSslCrtList(this.#o.crtList))]);
    const certList = parseSslCertList(certListReply);
    const held = new Set(certList.certs);
    const listed = new Map<string, CrtListLine[]>();
    for (const e of parseSslCrtList(crtListReply).entries) listed.set(e.cert, [...(listed.get(e.cert) ?? []), e]);
    if (certList.transaction !== null) {
      // Left by an interrupted update: HAProxy has one transaction slot, so free it first.
      log.warn({ cert: certList.transaction }, 'aborting a certificate transaction left open');
      await client.run(abortSslCert(certList.transaction));
    }

    // Certificates listed at start-up that this process did not send: compare fingerprints.
    const unknown = [...desired.values()].filter((d) => listed.has(d.name) && !this.#served.has(d.name));
    if (unknown.length > 0) {
      const infos = await client.batch(unknown.map((d) => showSslCert(d.name)));
      infos.forEach((r, i) => {
        const d = unknown[i]!;
        if (!r.ok) return;
        const info = parseSslCertInfo(r.reply);
        // Same leaf certificate as the file: adopt it without resending. (A change of the chain
        // alone while the updater was down is not seen: `show ssl cert` shows only the leaf.)
        if (info.sha1 === d.pem.sha1) this.#served.set(d.name, { name: d.name, source: d.source, hash: d.pem.hash, sha1: info.sha1, notAfter: info.notAfter });
      });
    }

    for (const d of desired.values()) {
      const isListed = listed.has(d.name);
      const current = this.#served.get(d.name);
      if (isListed && current?.hash === d.pem.hash) continue;
      const steps = isListed ? 'update' : held.has(d.name) ? 'relist' : 'add';
      const err = await this.#apply(d, steps);
      if (err) {
        this.#failedUpdates++;
        result.failed.push(err);
        result.failures.push({ path: d.source, reason: 'runtime' });
        log.warn({ path: d.source, reason: err.reason, code: err.code }, 'certificate update refused by HAProxy; the served one is kept');
        continue;
      }
      this.#served.set(d.name, { name: d.name, source: d.source, hash: d.pem.hash, sha1: d.pem.sha1, notAfter: d.pem.notAfter });
      (steps === 'update' ? result.updated : result.added).push(d.source);
    }

    // Removals: names in our store that no file asks for any more (a bad or half-written file keeps its certificate).
    // `held` too: a store entry left unlisted by an interrupted add is freed as well.
    const ours = new Set([...listed.keys(), ...held, ...this.#served.keys()].filter((n) => path.dirname(n) === this.#o.storeDir));
    for (const name of ours) {
      if (desired.has(name) || keep.has(name)) continue;
      const lines = listed.get(name) ?? [];
      const cmds = [...lines.map((l) => delSslCrtList(this.#o.crtList, name, l.line)), delSslCert(name)];
      const replies = await client.batch(cmds);
      const bad = replies.find((r, i) => !r.ok && !(i === replies.length - 1 && r.error.code === 'E_SSL_CERT_NOT_FOUND'));
      if (bad && !bad.ok) {
        this.#failedUpdates++;
        result.failures.push({ path: name, reason: 'remove' });
        log.warn({ cert: name, err: bad.error }, 'removing a certificate failed; retried next pass');
        continue;
      }
      this.#served.delete(name);
      await rm(name, { force: true });
      result.removed.push(path.join(this.#o.dir, path.basename(name)));
    }

    await this.#writeCrtList();
    result.durationMs = Math.round(performance.now() - started);
    if (result.added.length + result.updated.length + result.removed.length > 0) {
      log.info({ added: result.added.length, updated: result.updated.length, removed: result.removed.length, ms: result.durationMs }, 'certificates applied');
    }
    this.#o.onPass?.(result);
    return result;
  }

  /** Reads and validates every PEM in the directory. `keep`: names whose served certificate must stay (bad/pending file). */
  async #readDir(result: PassResult): Promise<{ desired: Map<string, Desired>; keep: Set<string> }> {
    const desired = new Map<string, Desired>();
    const keep = new Set<string>();
    const now = this.#o.now();
    const limit = payloadLimit(this.#o.client.bufsize);
    const seen = new Set<string>();
    for (const entry of await readdir(this.#o.dir)) {
      if (entry.startsWith('.') || !entry.endsWith('.pem')) continue;
      const source = path.join(this.#o.dir, entry);
      const name = path.join(this.#o.storeDir, entry);
      seen.add(source);
      let text: string;
      let mtimeMs: number;
      try {
        const st = await stat(source);
        if (!st.isFile()) continue;
        mtimeMs = st.mtimeMs;
        text = await readFile(source, 'utf8');
      } catch (err) {
        // Gone between readdir and read (a writer's rename): the next event sees the result.
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
        throw err;
      }
      const reject = (problem: string, reason: string) => {
        const e = new CertFileError(source, reason, { problem });
        result.rejected.push(e);
        this.#rejected.set(source, e);
        keep.add(name);
        const rawHash = `${text.length}:${mtimeMs}`;
        if (this.#rejectedRaw.get(source) !== rawHash) {
          this.#rejectedRaw.set(source, rawHash);
          this.#failedUpdates++;
          result.failures.push({ path: source, reason: problem });
          log.warn({ path: source, problem, reason }, 'certificate file rejected; the certificate it would replace keeps serving');
        }
      };
      if (!NAME_RE.test(entry)) {
        reject('file-name', 'file name must be [A-Za-z0-9._+-] ending in .pem');
        continue;
      }
      const pem = validatePem(text, now);
      if (!pem.ok) {
        const age = Date.now() - mtimeMs;
        if (mayBeIncomplete(pem.problem) && age < this.#o.settleMs) {
          result.pending.push(source);
          keep.add(name);
          this.#retryAt(this.#o.settleMs - age);
          continue;
        }
        reject(pem.problem, pem.reason);
        continue;
      }
      const bytes = commandBytes({ text: `set ssl cert ${name} <<`, payload: pem.lines });
      if (bytes > limit) {
        reject('too-large', `PEM of ${bytes} bytes is over the ${limit} bytes the Runtime API takes with tune.bufsize ${this.#o.client.bufsize}; raise tune.bufsize (and the updater's bufsize) or shorten the chain`);
        continue;
      }
      this.#rejected.delete(source);
      this.#rejectedRaw.delete(source);
      desired.set(name, { source, name, pem });
    }
    for (const source of this.#rejected.keys()) {
      if (!seen.has(source)) {
        this.#rejected.delete(source);
        this.#rejectedRaw.delete(source);
      }
    }
    return { desired, keep };
  }

  /**
   * The runtime steps for one certificate, in one connection. Returns the refusal (with the
   * file's path) or null. On any refusal the transaction is aborted, and a store entry made
   * by this call is deleted, so HAProxy is left as it was.
   */
  async #apply(d: Desired, steps: 'add' | 'relist' | 'update'): Promise<CertFileError | null> {
    const client = this.#o.client;
    const cmds = [
      ...(steps === 'add' ? [newSslCert(d.name)] : []),
      setSslCert(d.name, d.pem.lines, { bufsize: client.bufsize }),
      commitSslCert(d.name),
      ...(steps === 'update' ? [] : [addSslCrtList(this.#o.crtList, { cert: d.name })]),
    ];
    const results = await client.batch(cmds);
    let failure: UpdaterError | null = null;
    results.forEach((r, i) => {
      if (failure) return;
      if (!r.ok) {
        failure = r.error;
        return;
      }
      try {
        const text = cmds[i]!.text;
        if (text.startsWith('new ')) parseNewSslCert(r.reply, d.name);
        else if (text.startsWith('set ')) parseSetSslCert(r.reply, d.name);
        else if (text.startsWith('commit ')) parseCommitSslCert(r.reply, d.name);
        else parseAddSslCrtList(r.reply, this.#o.crtList, d.name);
      } catch (err) {
        failure = err as UpdaterError;
      }
    });
    if (!failure) {
      // Written only now: the copy must always be what HAProxy serves, since a reload loads it.
      // Passes run one at a time through the queue, so no reload happens in between.
      await atomicWrite(d.name, d.pem.lines.join('\n') + '\n', 0o600);
      return null;
    }
    const err = failure as UpdaterError;
    if (err.recoverable) throw err; // transport or a stopping worker: the whole pass is retried
    // Undo: free the transaction slot (ours, or the one HAProxy wrongly used), and an empty new store.
    const open = parseSslCertList(await client.run(showSslCerts())).transaction;
    const undo = [...(open ? [abortSslCert(open)] : []), ...(steps === 'add' ? [delSslCert(d.name)] : [])];
    const undone = undo.length > 0 ? await client.batch(undo) : [];
    undone.forEach((r, i) => {
      if (r.ok && undo[i]!.text.startsWith('abort ')) parseSslConfirmation(r.reply, 'abort', open ?? '');
    });
    return new CertFileError(d.source, `HAProxy refused it: ${err.message}`, { problem: 'runtime', code: err.code }, { cause: err });
  }

  async #writeCrtList(): Promise<void> {
    const entries = [...this.#served.keys()].map((cert) => ({ cert }));
    const text = renderCrtList(entries, this.#o.defaultCert);
    const previous = await readFile(this.#o.crtList, 'utf8').catch(() => null);
    if (previous !== text) await atomicWrite(this.#o.crtList, text);
  }
}
