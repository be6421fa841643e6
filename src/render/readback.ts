/**
 * Reading back a config this project rendered: the structure hash and slot count of each
 * backend, and the TCP listeners. Pure text parsing: the daemon reads the running config
 * from disk and hands the text here.
 */
import { SLOT_PREFIX } from '../model.js';

/**
 * `backend → structure hash` from a config this module rendered (the `# structure <hash>`
 * line in each backend): what the running HAProxy was built with, also after a restart.
 */
export function readAppliedStructure(configText: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const { backend, line } of backendLines(configText)) {
    const m = /^\s*# structure ([0-9a-f]{16})\s*$/.exec(line);
    if (m?.[1]) out.set(backend, m[1]);
  }
  return out;
}

/** `backend → slot count` from the `server-template <prefix> 1-N` lines. */
export function readAppliedSlots(configText: string): Map<string, number> {
  const out = new Map<string, number>();
  const re = new RegExp(`^\\s*server-template ${SLOT_PREFIX} 1-([0-9]+)\\s`);
  for (const { backend, line } of backendLines(configText)) {
    const m = re.exec(line);
    if (m?.[1]) out.set(backend, Number(m[1]));
  }
  return out;
}

function* backendLines(configText: string): Generator<{ backend: string; line: string }> {
  let current: string | null = null;
  for (const line of configText.split('\n')) {
    const section = /^(global|defaults|frontend|backend|listen|peers|resolvers|userlist|program|mailers|cache|ring|http-errors)\b\s*(\S*)/.exec(line);
    if (section) {
      current = section[1] === 'backend' && section[2] ? section[2] : null;
      continue;
    }
    if (current) yield { backend: current, line };
  }
}

/**
 * Backends the config names in a rule (`default_backend <be>`, `use_backend <be> if ...`),
 * not through a map: HAProxy refuses to delete them at runtime, and dropping them changes
 * a frontend, which takes a reload.
 */
export function staticBackendRefs(configText: string): Set<string> {
  const out = new Set<string>();
  for (const line of configText.split('\n')) {
    const m = /^\s*(?:default_backend|use_backend)\s+([^\s%]\S*)/.exec(line);
    if (m?.[1]) out.add(m[1]);
  }
  return out;
}

export interface Listener {
  /** `0.0.0.0`, `::` or an IP literal. */
  host: string;
  port: number;
}

/** TCP listeners (`bind <addr>:<port>`) of a config; unix sockets and others are skipped. */
export function tcpListeners(configText: string): Listener[] {
  const out: Listener[] = [];
  for (const line of configText.split('\n')) {
    const m = /^\s*bind\s+(\S+)/.exec(line);
    if (!m?.[1]) continue;
    const addr = m[1];
    const v6 = /^\[([0-9A-Fa-f:.]+)\]:(\d+)$/.exec(addr);
    const v4 = /^(\*|[0-9.]*):(\d+)$/.exec(addr);
    if (v6?.[1] && v6[2]) out.push({ host: v6[1], port: Number(v6[2]) });
    else if (v4?.[2]) out.push({ host: v4[1] === '*' || v4[1] === '' ? '0.0.0.0' : (v4[1] ?? '0.0.0.0'), port: Number(v4[2]) });
  }
  return out;
}
