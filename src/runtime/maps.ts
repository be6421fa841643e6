/**
 * Map commands and parsers. Runtime map changes are NOT written to the map file: whoever
 * changes a map here must also rewrite the file, or the next reload reverts the change.
 */
import { InvalidArgumentError, ReplyParseError } from '../errors.js';
import { assertInt, assertMapPath, assertMapToken, makeCommand, MAX_PAYLOAD_BYTES, type Command } from './command.js';
import type { RuntimeClient } from './client.js';
import { replyLines } from './lines.js';

export interface MapEntry {
  key: string;
  value: string;
}

const version = (v: number) => assertInt(v, 0, 2_147_483_647, 'version');

/** `show map`: lists loaded maps. */
export function showMaps(): Command {
  return makeCommand('show map');
}

/** `show map <path>`: entries of the current version. */
export function showMap(path: string): Command {
  return makeCommand(`show map ${assertMapPath(path)}`);
}

/** Adds an entry; an existing key gets a duplicate (the first one wins): use `setMap` to change. */
export function addMap(path: string, key: string, value: string): Command {
  return makeCommand(`add map ${assertMapPath(path)} ${assertMapToken(key, 'key')} ${assertMapToken(value, 'value')}`);
}

/** Changes the value of an existing key (`entry not found.` otherwise). */
export function setMap(path: string, key: string, value: string): Command {
  return makeCommand(`set map ${assertMapPath(path)} ${assertMapToken(key, 'key')} ${assertMapToken(value, 'value')}`);
}

/** Deletes every entry with this key (`Key not found.` when none). */
export function delMap(path: string, key: string): Command {
  return makeCommand(`del map ${assertMapPath(path)} ${assertMapToken(key, 'key')}`);
}

/** `clear map [@<ver>] <path>`: empties the current (or the given) version. */
export function clearMap(path: string, ver?: number): Command {
  return makeCommand(ver === undefined ? `clear map ${assertMapPath(path)}` : `clear map @${version(ver)} ${assertMapPath(path)}`);
}

/** `prepare map <path>`: allocates a new, empty version; reply parsed by `parsePrepareMap`. */
export function prepareMap(path: string): Command {
  return makeCommand(`prepare map ${assertMapPath(path)}`);
}

function payloadLine(e: MapEntry, i: number): string {
  return `${assertMapToken(e.key, `entries[${i}].key`)} ${assertMapToken(e.value, `entries[${i}].value`)}`;
}

/**
 * `add map @<ver> <path> <<` with one `key value` payload line per entry. HAProxy holds a
 * payload in one 16 kB buffer and drops the connection beyond it, so a payload over
 * `MAX_PAYLOAD_BYTES` throws; `addMapPayloadChunks` splits instead. At least one entry.
 */
export function addMapPayload(ver: number, path: string, entries: readonly MapEntry[]): Command {
  if (entries.length === 0) throw new InvalidArgumentError('addMapPayload needs at least one entry', { argument: 'entries', value: entries });
  return makeCommand(`add map @${version(ver)} ${assertMapPath(path)} <<`, entries.map(payloadLine));
}

/** As many `addMapPayload` commands as needed to stay under `MAX_PAYLOAD_BYTES` each. */
export function addMapPayloadChunks(ver: number, path: string, entries: readonly MapEntry[]): Command[] {
  const lines = entries.map(payloadLine);
  const out: Command[] = [];
  let chunk: MapEntry[] = [];
  let bytes = 0;
  lines.forEach((line, i) => {
    if (bytes + line.length + 1 > MAX_PAYLOAD_BYTES && chunk.length > 0) {
      out.push(addMapPayload(ver, path, chunk));
      chunk = [];
      bytes = 0;
    }
    chunk.push(entries[i] as MapEntry);
    bytes += line.length + 1;
  });
  if (chunk.length > 0) out.push(addMapPayload(ver, path, chunk));
  return out;
}

/** `commit map @<ver> <path>`: makes the version current and drops older ones. */
export function commitMap(ver: number, path: string): Command {
  return makeCommand(`commit map @${version(ver)} ${assertMapPath(path)}`);
}

// ---------------------------------------------------------------- parsers

export interface MapInfo {
  id: number;
  /** Path the map was loaded from. */
  file: string;
  description: string;
  entryCount: number;
  currVer: number;
  nextVer: number;
}

/** `show map` without argument: `# id (file) description` then one line per map. */
export function parseMapList(text: string): MapInfo[] {
  const lines = text.split('\n').filter((l) => l.trim() !== '');
  if (!lines[0]?.startsWith('# id (file)')) throw new ReplyParseError('show map: missing "# id (file) description" header', { reply: text.slice(0, 200) });
  return lines.slice(1).map((line) => {
    const m = /^(\d+) \((.*)\) (.*)$/.exec(line);
    if (!m) throw new ReplyParseError('show map: unexpected line', { line });
    const desc = m[3] ?? '';
    const field = (name: string): number => {
      const f = new RegExp(`\\b${name}=(\\d+)`).exec(desc);
      if (!f) throw new ReplyParseError(`show map: no ${name}`, { line });
      return Number(f[1]);
    };
    return { id: Number(m[1]), file: m[2] ?? '', description: desc, entryCount: field('entry_cnt'), currVer: field('curr_ver'), nextVer: field('next_ver') };
  });
}

/** `show map <path>`: `0x<ref> <key> <value>` lines. */
export function parseMapEntries(text: string): MapEntry[] {
  const entries: MapEntry[] = [];
  for (const line of replyLines(text)) {
    const m = /^0x[0-9a-fA-F]+ (\S+) ?(.*)$/.exec(line);
    if (!m) throw new ReplyParseError('show map <file>: unexpected line', { line });
    entries.push({ key: m[1] ?? '', value: m[2] ?? '' });
  }
  return entries;
}

/** `New version created: <n>` → n. */
export function parsePrepareMap(reply: string): number {
  const m = /^New version created: (\d+)/.exec(reply.trim());
  if (!m) throw new ReplyParseError('prepare map: unexpected reply', { reply: reply.slice(0, 200) });
  return Number(m[1]);
}

/**
 * Replaces the whole content of a map atomically: `prepare map`, payload chunks into the
 * new version, then `commit map` only if every chunk was accepted. Lookups see the old
 * content until the commit and the new content after it, never a mix. On failure the
 * uncommitted version is cleared (best effort) and the first error thrown.
 */
export async function replaceMap(client: RuntimeClient, path: string, entries: readonly MapEntry[]): Promise<{ version: number; entries: number }> {
  // Build (and so validate) every command before the first one is sent.
  assertMapPath(path);
  entries.forEach(payloadLine);
  const ver = parsePrepareMap(await client.run(prepareMap(path)));
  const chunks = addMapPayloadChunks(ver, path, entries);
  const results = await client.batch(chunks);
  const failed = results.find((r) => !r.ok);
  if (failed && !failed.ok) {
    await client.run(clearMap(path, ver)).catch(() => undefined);
    throw failed.error;
  }
  await client.run(commitMap(ver, path));
  return { version: ver, entries: entries.length };
}
