/**
 * The registry load: one paged range of the prefix at one revision. The watcher runs it on
 * every (re)connect before watching from revision+1; the one-shot commands (`render`,
 * `plan`, `status`) run the same load once and parse it the same way.
 */
import { Range, type Etcd3 } from 'etcd3';
import { createEtcdClient, type EtcdAuthOptions, type EtcdTlsOptions } from './client.js';
import { isClaimKey, normalizePrefix, parseRegistry, type ParseResult, type RegistryKv } from './parse.js';
import type { AddressPolicy } from './trust.js';

export interface Snapshot {
  kv: Map<string, string>;
  /** etcd create_revision of the claim keys only (domain, ports): who claimed first. */
  created: Map<string, string>;
  revision: string;
}

const utf8 = new TextDecoder('utf-8');

/** Range of `range`, `pageSize` keys a page, every page at the revision of the first. */
export async function loadRange(client: Etcd3, range: Range, pageSize: number): Promise<Snapshot> {
  const kv = new Map<string, string>();
  const created = new Map<string, string>();
  let key: Buffer | string = range.start;
  let revision: string | undefined;
  for (;;) {
    const res = await client.kv.range({ key, range_end: range.end, limit: pageSize, ...(revision ? { revision } : {}) });
    revision ??= res.header.revision;
    for (const item of res.kvs) {
      const k = utf8.decode(item.key);
      kv.set(k, utf8.decode(item.value));
      if (isClaimKey(k)) created.set(k, item.create_revision);
    }
    const last = res.kvs[res.kvs.length - 1];
    if (!res.more || !last) break;
    key = Buffer.concat([last.key, Buffer.from([0])]);
  }
  return { kv, created, revision };
}

/** A snapshot's keys as parseRegistry takes them (create_revision on the claim keys). */
export function* snapshotEntries(kv: ReadonlyMap<string, string>, created: ReadonlyMap<string, string>): Iterable<RegistryKv> {
  for (const [key, value] of kv) yield { key, value, createRevision: created.get(key) };
}

export interface LoadOnceOptions {
  endpoints: string[];
  /** Registry prefix, e.g. `/haproxy-discover`. */
  prefix: string;
  tls?: EtcdTlsOptions;
  auth?: EtcdAuthOptions;
  /** Page size of the range. Default 1000 (as the watcher). */
  pageSize?: number;
  /** `--upstream-cidrs`, as the watcher applies it. Default none. */
  addressPolicy?: AddressPolicy | null;
}

/** Connects, loads the registry once (as the watcher does at start), parses it, closes. */
export async function loadRegistryOnce(opts: LoadOnceOptions): Promise<ParseResult> {
  const prefix = normalizePrefix(opts.prefix);
  const client = await createEtcdClient({ endpoints: opts.endpoints, tls: opts.tls, auth: opts.auth });
  try {
    const snap = await loadRange(client, Range.prefix(prefix + '/'), opts.pageSize ?? 1000);
    return parseRegistry(snapshotEntries(snap.kv, snap.created), prefix, snap.revision, { addressPolicy: opts.addressPolicy });
  } finally {
    client.close();
  }
}
