/**
 * RegistryWatcher: keeps a typed Registry in sync with the etcd prefix.
 *
 * Protocol (design.md): one paged range of the whole prefix pinned to one revision R, then a
 * watch from R+1 on a gRPC watch stream (nothing is lost between the two), events applied to
 * a key → value map, the Registry rebuilt per coalesced batch. After any stream failure
 * (etcd down, network) the last good registry stays and one update with `stale: true` is
 * emitted (never an empty registry); on reconnect a full resync (range + new watch) replaces
 * the map, so deletes made during the outage are reflected. A watch cancelled by compaction
 * is resynced the same way, at once.
 *
 * It uses etcd3's raw watch stream (`client.watchClient.watch()`), not etcd3's `Watcher`:
 * that one resumes by itself after a reconnect from `header.revision + 1` of the last
 * response — the created response and catch-up batches carry the store's current revision,
 * not that of the last event delivered, so a resume can skip events — and it reports a
 * compaction only as an untyped "Watcher canceled" error without `compact_revision`. Here
 * every response is seen (created / canceled / compact_revision / events) and reconnection
 * is explicit.
 *
 * Connection lifecycle (guarded transitions, TRANSITIONS below):
 *   idle → connecting (open stream) → loading (range) → watching (watch created)
 *   any live state → disconnected (failure; retry after backoff) → connecting …
 *   watching → connecting (compaction: resync at once)
 *   any → stopped
 *
 * Endpoints: one etcd3 client per endpoint, so the watcher knows which member it reads
 * (`endpoint`) and the range and the watch of one attempt go to the same member. The first
 * endpoint is tried first; after a failure the next one, in turn. Every call carries
 * require-leader (client.ts): a member cut off from the quorum refuses the range and
 * cancels the watch stream (etcd does so after 3 election timeouts without a leader), so a
 * partitioned member is left like a dead one instead of serving a silent stream.
 *
 * The watcher never talks to HAProxy.
 */
import { Range, type Etcd3, type IDuplexStream, type IWatchRequest, type IWatchResponse } from 'etcd3';
import { ConfigError, EtcdUnavailableError } from '../errors.js';
import { logger } from '../log.js';
import { Backoff, backoffDelay } from '../backoff.js';
import type { Registry, Rejection } from '../model.js';
import { asEtcdError, createEtcdClient, validateEndpoints, type EtcdAuthOptions, type EtcdTlsOptions } from './client.js';
import { isClaimKey, normalizePrefix, parseRegistry } from './parse.js';
import { loadRange, snapshotEntries, type Snapshot } from './load.js';
import type { AddressPolicy } from './trust.js';

const log = logger('watch');

export type WatchState = 'idle' | 'connecting' | 'loading' | 'watching' | 'disconnected' | 'stopped';

export interface RegistryUpdate {
  readonly registry: Registry;
  /** All current rejections (not only new ones). */
  readonly rejections: Rejection[];
  /** True while etcd is unreachable: `registry` is the last good one. */
  readonly stale: boolean;
  /** initial: first load; change: watch events; resync: reload after reconnect/compaction; stale: etcd lost. */
  readonly cause: 'initial' | 'change' | 'resync' | 'stale';
  /** Watch events in this batch (change), keys that differ from before (resync), 0 otherwise. */
  readonly changes: number;
  readonly revision: string;
}

/** Counters for the daemon's metrics (mutated in place; read them, do not write). */
export interface WatchStats {
  /** Updates emitted (all causes). */
  updates: number;
  /** Successful reloads after the first (reconnect or compaction). */
  resyncs: number;
  /** Watches cancelled by etcd because their start revision was compacted. */
  compactions: number;
  /** Transitions from watching to disconnected. */
  disconnects: number;
  /** Watch events applied. */
  events: number;
  /** New rejections (an entry that stays rejected counts once). */
  rejections: number;
}

export interface RegistryWatcherOptions {
  /** etcd URLs, e.g. `['http://127.0.0.1:2379']`. */
  endpoints: string[];
  /** Registry prefix, e.g. `/haproxy-discover` (trailing `/` ignored). */
  prefix: string;
  /** Quiet period after the last event before a batch is flushed. Default 5 ms. */
  coalesceMs?: number;
  /** A batch is flushed at most this long after its first event, even if events keep coming. Default 100 ms. */
  maxBatchDelayMs?: number;
  /** TLS files for https endpoints. */
  tls?: EtcdTlsOptions;
  auth?: EtcdAuthOptions;
  /**
   * Reconnect backoff, ±20 % jitter: `initialMs` (default 250) before trying the next endpoint;
   * after every endpoint failed in a row, exponential up to `maxMs` (default 1000: a healed
   * network is noticed within about a second).
   */
  backoff?: { initialMs?: number; maxMs?: number };
  /** Deadline of each range call and of the watch-created answer. Default 5000 ms. */
  requestTimeoutMs?: number;
  /** Keys per range page (one revision for all pages). Default 1000. */
  pageSize?: number;
  /** Called once for each new rejection (metrics hook). */
  onRejection?: (rejection: Rejection) => void;
  /** `--upstream-cidrs`: upstream addresses it refuses are rejected. Default none. */
  addressPolicy?: AddressPolicy | null;
  /**
   * Test hooks, not for production. `afterLoad` is awaited between the range (at
   * `revision`) and the watch creation (from `revision`+1): a test can compact there to
   * make etcd cancel the new watch for compaction.
   */
  hooks?: { afterLoad?: (revision: string) => Promise<void> | void };
}

const TRANSITIONS: Readonly<Record<WatchState, readonly WatchState[]>> = {
  idle: ['connecting', 'stopped'],
  connecting: ['loading', 'disconnected', 'stopped'],
  loading: ['watching', 'disconnected', 'connecting', 'stopped'],
  watching: ['connecting', 'disconnected', 'stopped'],
  disconnected: ['connecting', 'stopped'],
  stopped: [],
};

type WatchStream = IDuplexStream<IWatchRequest, IWatchResponse>;

const utf8 = new TextDecoder('utf-8');
const decode = (b: Buffer | undefined): string => (b ? utf8.decode(b) : '');
const maxRev = (a: string, b: string): string => (BigInt(a) >= BigInt(b) ? a : b);

export class RegistryWatcher {
  readonly stats: WatchStats = { updates: 0, resyncs: 0, compactions: 0, disconnects: 0, events: 0, rejections: 0 };

  readonly #endpoints: string[];
  readonly #prefix: string;
  readonly #range: Range;
  readonly #coalesceMs: number;
  readonly #maxBatchDelayMs: number;
  readonly #backoffInitial: number;
  readonly #backoffMax: number;
  readonly #requestTimeoutMs: number;
  readonly #pageSize: number;
  readonly #opts: RegistryWatcherOptions;

  #state: WatchState = 'idle';
  /** One client per endpoint (same order as #endpoints). */
  #clients: Etcd3[] = [];
  /** Index of the endpoint in use (or being tried). */
  #index = 0;
  /** Incremented whenever the current attempt is abandoned; callbacks of older attempts are ignored. */
  #epoch = 0;
  #stream: WatchStream | null = null;
  #pendingLoad: Snapshot | null = null;
  #kv = new Map<string, string>();
  /** create_revision of the claim keys (parse.ts isClaimKey): the first claimant of a domain or port keeps it. */
  #created = new Map<string, string>();
  #revision = '0';
  #current: { registry: Registry; rejections: Rejection[] } | null = null;
  #rejectionKeys = new Set<string>();
  #ignoredKeys = new Set<string>();
  #stale = false;
  #failures = 0;
  readonly #backoff: Backoff;

  #batchStart: number | null = null;
  #batchChanges = 0;
  #flushTimer: NodeJS.Timeout | null = null;
  #retryTimer: NodeJS.Timeout | null = null;
  #createTimer: NodeJS.Timeout | null = null;

  #started: { promise: Promise<void>; resolve: () => void; reject: (err: Error) => void } | null = null;
  readonly #updateListeners = new Set<(u: RegistryUpdate) => void>();
  readonly #stateListeners = new Set<(state: WatchState, previous: WatchState) => void>();

  constructor(opts: RegistryWatcherOptions) {
    this.#endpoints = validateEndpoints(opts.endpoints, opts.tls);
    if (typeof opts.prefix !== 'string' || !opts.prefix.startsWith('/')) throw new ConfigError('prefix must start with "/"', { prefix: opts.prefix });
    this.#prefix = normalizePrefix(opts.prefix);
    this.#range = Range.prefix(this.#prefix + '/');
    this.#coalesceMs = nonNegative('coalesceMs', opts.coalesceMs ?? 5);
    this.#maxBatchDelayMs = nonNegative('maxBatchDelayMs', opts.maxBatchDelayMs ?? 100);
    this.#backoffInitial = nonNegative('backoff.initialMs', opts.backoff?.initialMs ?? 250) || 1;
    this.#backoffMax = Math.max(this.#backoffInitial, nonNegative('backoff.maxMs', opts.backoff?.maxMs ?? 1000));
    this.#requestTimeoutMs = nonNegative('requestTimeoutMs', opts.requestTimeoutMs ?? 5000) || 5000;
    this.#pageSize = Math.max(1, Math.floor(opts.pageSize ?? 1000));
    this.#backoff = new Backoff({ initialMs: this.#backoffInitial, maxMs: this.#backoffMax, jitter: 0.2 });
    this.#opts = opts;
  }

  get state(): WatchState {
    return this.#state;
  }

  /** True between a lost connection and the next successful resync. */
  get stale(): boolean {
    return this.#stale;
  }

  /** The etcd endpoint in use: the one being watched, or tried next. */
  get endpoint(): string {
    return this.#endpoints[this.#index]!;
  }

  /** The endpoints, normalised, in the order they are tried. */
  get endpoints(): readonly string[] {
    return this.#endpoints;
  }

  /** The last registry built (null before the first load). */
  get current(): { registry: Registry; rejections: Rejection[] } | null {
    return this.#current;
  }

  onUpdate(listener: (u: RegistryUpdate) => void): () => void {
    this.#updateListeners.add(listener);
    return () => this.#updateListeners.delete(listener);
  }

  onStateChange(listener: (state: WatchState, previous: WatchState) => void): () => void {
    this.#stateListeners.add(listener);
    return () => this.#stateListeners.delete(listener);
  }

  /**
   * Connects and resolves after the first successful load (retrying with backoff meanwhile;
   * `state` shows progress). Rejects with EtcdUnavailableError if stopped before that, or
   * ConfigError if the TLS files cannot be read.
   */
  start(): Promise<void> {
    if (this.#started) return this.#started.promise;
    let resolve!: () => void;
    let reject!: (err: Error) => void;
    const promise = new Promise<void>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    this.#started = { promise, resolve, reject };
    // Callers await `promise`; this only keeps an unobserved rejection from crashing the process.
    promise.catch(() => undefined);
    if (this.#state === 'stopped') {
      reject(new EtcdUnavailableError('watcher was stopped', { prefix: this.#prefix }));
      return promise;
    }
    const { tls, auth } = this.#opts;
    Promise.all(this.#endpoints.map((e) => createEtcdClient({ endpoints: [e], tls, auth, requestTimeoutMs: this.#requestTimeoutMs, requireLeader: true })))
      .then((clients) => {
        if (this.#state === 'stopped') {
          for (const c of clients) c.close();
          return;
        }
        this.#clients = clients;
        log.info({ endpoints: this.#endpoints, prefix: this.#prefix }, 'watching etcd registry');
        void this.#connect();
      })
      .catch((err: Error) => {
        this.#started?.reject(err);
        void this.stop();
      });
    return promise;
  }

  /** Stops watching and closes the etcd client. Idempotent. */
  async stop(): Promise<void> {
    if (this.#state === 'stopped') return;
    this.#epoch++;
    this.#transition('stopped');
    this.#teardownStream();
    this.#clearTimer('flush');
    this.#clearTimer('retry');
    this.#clearTimer('create');
    for (const c of this.#clients) c.close();
    this.#clients = [];
    this.#started?.reject(new EtcdUnavailableError('watcher stopped before the first load', { prefix: this.#prefix }));
  }

  // ---------------------------------------------------------------- lifecycle

  #transition(to: WatchState): void {
    const from = this.#state;
    if (from === to) return;
    if (!TRANSITIONS[from].includes(to)) {
      // A bug in this class, not an operational condition: refuse the transition loudly.
      const err = new Error(`invalid watcher transition ${from} → ${to}`);
      log.error({ err }, 'invalid state transition');
      throw err;
    }
    this.#state = to;
    log.debug({ from, to }, 'state');
    for (const l of this.#stateListeners) {
      try {
        l(to, from);
      } catch (err) {
        log.warn({ err }, 'state listener threw');
      }
    }
  }

  /** One attempt: open stream, range, create watch. Failures go to #fail (backoff + retry). */
  async #connect(): Promise<void> {
    const client = this.#clients[this.#index];
    if (!client || this.#state === 'stopped') return;
    const epoch = ++this.#epoch;
    this.#transition('connecting');
    let stream: WatchStream;
    try {
      stream = await client.watchClient.watch();
    } catch (err) {
      return this.#fail(epoch, err);
    }
    if (epoch !== this.#epoch) {
      safeCancel(stream);
      return;
    }
    this.#stream = stream;
    stream.on('data', (res) => this.#onResponse(epoch, res));
    stream.on('error', (err) => this.#fail(epoch, err));
    stream.on('end', () => this.#fail(epoch, new Error('etcd closed the watch stream')));

    this.#transition('loading');
    let snapshot: Snapshot;
    try {
      snapshot = await this.#load(client);
      await this.#opts.hooks?.afterLoad?.(snapshot.revision);
    } catch (err) {
      return this.#fail(epoch, err);
    }
    if (epoch !== this.#epoch) return;
    this.#pendingLoad = snapshot;
    const startRevision = (BigInt(snapshot.revision) + 1n).toString();
    this.#createTimer = setTimeout(() => this.#fail(epoch, new Error(`no answer to watch create within ${this.#requestTimeoutMs} ms`)), this.#requestTimeoutMs);
    try {
      stream.write({
        create_request: { key: this.#range.start, range_end: this.#range.end, start_revision: startRevision, progress_notify: true },
      });
    } catch (err) {
      return this.#fail(epoch, err);
    }
  }

  /** Range of the whole prefix, paged, all pages at the revision of the first. */
  #load(client: Etcd3): Promise<Snapshot> {
    return loadRange(client, this.#range, this.#pageSize);
  }

  #onResponse(epoch: number, res: IWatchResponse): void {
    if (epoch !== this.#epoch) return;
    if (res.created) {
      this.#clearTimer('create');
      if (res.canceled) return this.#onCancel(epoch, res);
      return this.#onCreated();
    }
    if (res.canceled) return this.#onCancel(epoch, res);
    if (this.#state !== 'watching' || res.events.length === 0) return; // progress notification
    for (const ev of res.events) {
      const key = decode(ev.kv.key);
      if (ev.type === 'Put') this.#kv.set(key, decode(ev.kv.value));
      else this.#kv.delete(key);
      if (isClaimKey(key)) {
        if (ev.type === 'Put') this.#created.set(key, ev.kv.create_revision);
        else this.#created.delete(key);
      }
      this.#revision = maxRev(this.#revision, ev.kv.mod_revision);
    }
    this.stats.events += res.events.length;
    this.#batchChanges += res.events.length;
    this.#scheduleFlush();
  }

  #onCreated(): void {
    const snap = this.#pendingLoad;
    if (!snap || this.#state !== 'loading') return;
    this.#pendingLoad = null;
    const first = this.#current === null;
    const changes = first ? snap.kv.size : diffCount(this.#kv, snap.kv);
    this.#kv = snap.kv;
    this.#created = snap.created;
    this.#revision = snap.revision;
    this.#clearTimer('flush');
    this.#batchStart = null;
    this.#batchChanges = 0;
    this.#transition('watching');
    this.#failures = 0;
    this.#backoff.reset();
    const wasStale = this.#stale;
    this.#stale = false;
    if (!first) this.stats.resyncs++;
    log.info({ endpoint: this.endpoint, revision: snap.revision, keys: snap.kv.size, resync: !first, wasStale }, first ? 'registry loaded' : 'registry resynced');
    this.#emit(first ? 'initial' : 'resync', changes);
    if (first) this.#started?.resolve();
  }

  #onCancel(epoch: number, res: IWatchResponse): void {
    if (res.compact_revision && res.compact_revision !== '0') {
      // etcd compacted past our start revision (between range and watch, or a watcher
      // that fell behind). The connection is fine: resync at once, not stale. Events not
      // yet flushed are superseded by the reload.
      this.stats.compactions++;
      log.warn({ compactRevision: res.compact_revision, revision: this.#revision }, 'watch cancelled by compaction; resyncing');
      this.#abandonAttempt();
      void this.#connect();
      return;
    }
    this.#fail(epoch, new Error(`etcd cancelled the watch: ${res.cancel_reason || 'no reason given'}`));
  }

  /** The current attempt failed: keep the last registry, mark stale (once), retry after backoff. */
  #fail(epoch: number, err: unknown): void {
    if (epoch !== this.#epoch || this.#state === 'stopped' || this.#state === 'disconnected') return;
    const from = this.#state;
    this.#abandonAttempt();
    this.#failures++;
    if (from === 'watching') this.stats.disconnects++;
    const failed = this.endpoint;
    const n = this.#endpoints.length;
    this.#index = (this.#index + 1) % n;
    // Another member is tried after the initial delay; a whole round failed: back off.
    const delay = this.#failures % n === 0 ? this.#nextBackoff() : backoffDelay(0, { initialMs: this.#backoffInitial, jitter: 0.2 });
    const e = asEtcdError(err, 'etcd watch failed', { endpoint: failed });
    const ctx = { err: e, state: from, endpoint: failed, next: this.endpoint, failures: this.#failures, retryInMs: delay };
    if (this.#failures === 1 || this.#failures % 10 === 0) log.warn(ctx, 'etcd endpoint failed; keeping the last registry');
    else log.debug(ctx, 'etcd still unavailable');
    this.#transition('disconnected');
    if (this.#current && !this.#stale) {
      this.#stale = true;
      // Events received before the failure are a valid prefix of history: include them.
      this.#emit('stale', this.#batchChanges);
    }
    this.#batchChanges = 0;
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = null;
      void this.#connect();
    }, delay);
  }

  /** Invalidates callbacks of the current attempt and closes its stream. */
  #abandonAttempt(): void {
    this.#epoch++;
    this.#teardownStream();
    this.#pendingLoad = null;
    this.#clearTimer('create');
    this.#clearTimer('flush');
    this.#batchStart = null;
  }

  #teardownStream(): void {
    const s = this.#stream;
    this.#stream = null;
    if (s) safeCancel(s);
  }

  #nextBackoff(): number {
    return this.#backoff.next();
  }

  // ---------------------------------------------------------------- batching and emission

  #scheduleFlush(): void {
    const now = Date.now();
    this.#batchStart ??= now;
    this.#clearTimer('flush');
    const wait = Math.max(0, Math.min(this.#coalesceMs, this.#batchStart + this.#maxBatchDelayMs - now));
    this.#flushTimer = setTimeout(() => {
      this.#flushTimer = null;
      this.#batchStart = null;
      const changes = this.#batchChanges;
      this.#batchChanges = 0;
      this.#emit('change', changes);
    }, wait);
  }

  #emit(cause: RegistryUpdate['cause'], changes: number): void {
    if (cause !== 'stale' || changes > 0 || !this.#current) {
      const { registry, rejections, ignored } = parseRegistry(snapshotEntries(this.#kv, this.#created), this.#prefix, this.#revision, {
        addressPolicy: this.#opts.addressPolicy,
      });
      this.#noteRejections(rejections);
      this.#noteIgnored(ignored);
      this.#current = { registry, rejections };
    }
    // else: a stale update without new events carries the very same registry object.
    const { registry, rejections } = this.#current;
    const update: RegistryUpdate = { registry, rejections, stale: this.#stale, cause, changes, revision: registry.revision };
    this.stats.updates++;
    for (const l of this.#updateListeners) {
      try {
        l(update);
      } catch (err) {
        log.warn({ err }, 'update listener threw');
      }
    }
  }

  #noteRejections(rejections: readonly Rejection[]): void {
    const keys = new Set<string>();
    for (const r of rejections) {
      const id = `${r.key}\n${r.reason}`;
      keys.add(id);
      if (this.#rejectionKeys.has(id)) continue;
      this.stats.rejections++;
      log.warn({ key: r.key, reason: r.reason, ...(r.claimedBy ? { claimedBy: r.claimedBy } : {}) }, 'registry entry rejected');
      try {
        this.#opts.onRejection?.(r);
      } catch (err) {
        log.warn({ err }, 'onRejection threw');
      }
    }
    this.#rejectionKeys = keys;
  }

  #noteIgnored(ignored: readonly string[]): void {
    const keys = new Set(ignored);
    for (const k of keys) if (!this.#ignoredKeys.has(k)) log.debug({ key: k.slice(0, 512) }, 'ignoring key outside the registry contract');
    this.#ignoredKeys = keys;
  }

  #clearTimer(which: 'flush' | 'retry' | 'create'): void {
    const t = which === 'flush' ? this.#flushTimer : which === 'retry' ? this.#retryTimer : this.#createTimer;
    if (t) clearTimeout(t);
    if (which === 'flush') this.#flushTimer = null;
    else if (which === 'retry') this.#retryTimer = null;
    else this.#createTimer = null;
  }
}

function nonNegative(name: string, v: number): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) throw new ConfigError(`${name} must be a number >= 0`, { [name]: v });
  return v;
}

/**
 * Closes a watch stream. `end()` first: etcd3 marks the host failed (and closes all its
 * gRPC clients, including a new attempt's) on an error of a still-writable stream, and
 * cancel() produces a CANCELLED error.
 */
function safeCancel(s: WatchStream): void {
  try {
    s.end();
    s.cancel();
  } catch {
    /* already closed */
  }
}

/** Number of keys whose value differs between two maps (added, removed or changed). */
function diffCount(a: ReadonlyMap<string, string>, b: ReadonlyMap<string, string>): number {
  let n = 0;
  for (const [k, v] of a) if (b.get(k) !== v) n++;
  for (const k of b.keys()) if (!a.has(k)) n++;
  return n;
}

