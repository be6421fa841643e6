/**
 * Structural rules of src/ that can regress silently, checked by reading the sources as text:
 * src/render and src/reconcile are pure (no import of src/runtime or of the I/O folders, no
 * I/O module), src/cli.ts stays argument handling and output; and one rule with one owner:
 * the template accepts exactly the health paths the registry parser accepts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { DEFAULT_OPTIONS, type HttpService } from '../../src/model.js';
import { parseOptions } from '../../src/watch/index.js';
import { defaultSettings, renderConfig } from '../../src/render/index.js';

const SRC = fileURLToPath(new URL('../../src/', import.meta.url));

async function tsFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...(await tsFiles(p)));
    else if (e.name.endsWith('.ts')) out.push(p);
  }
  return out;
}

/** `import … from 'x'`, `export … from 'x'` and `import('x')`, with the named bindings when given. */
function imports(text: string): Array<{ spec: string; names: string[] | null }> {
  const out: Array<{ spec: string; names: string[] | null }> = [];
  for (const m of text.matchAll(/^\s*(?:import|export)\s+(type\s+)?([^'";]*?)\s*from\s*['"]([^'"]+)['"]/gm)) {
    const named = /\{([^}]*)\}/.exec(m[2] ?? '');
    const def = (m[2] ?? '').replace(/\{[^}]*\}/, '').replace(/,/g, '').trim();
    out.push({ spec: m[3]!, names: named && !def ? named[1]!.split(',').map((n) => n.replace(/^\s*type\s+/, '').replace(/\s+as\s+.*$/, '').trim()).filter(Boolean) : null });
  }
  for (const m of text.matchAll(/\bimport\(\s*['"]([^'"]+)['"]\s*\)/g)) out.push({ spec: m[1]!, names: null });
  for (const m of text.matchAll(/\brequire\(\s*['"]([^'"]+)['"]\s*\)/g)) out.push({ spec: m[1]!, names: null });
  return out;
}

/** Node modules that do I/O; node:net only for its pure address helpers. */
const IO_MODULES = ['fs', 'fs/promises', 'child_process', 'net', 'http', 'https', 'http2', 'dgram', 'dns', 'dns/promises', 'tls', 'readline', 'worker_threads', 'cluster', 'stream', 'os', 'process'];
const PURE_NET = new Set(['isIP', 'isIPv4', 'isIPv6']);
/** Folders of src/ that do I/O: the pure folders may not import them. */
const IO_FOLDERS = ['runtime', 'reload', 'daemon', 'watch'];

test('src/render and src/reconcile import nothing from src/runtime (or the other I/O folders) and do no I/O', async () => {
  const problems: string[] = [];
  let files = 0;
  for (const folder of ['render', 'reconcile']) {
    for (const file of await tsFiles(path.join(SRC, folder))) {
      files++;
      const rel = path.relative(SRC, file);
      const text = await readFile(file, 'utf8');
      for (const { spec, names } of imports(text)) {
        if (spec.startsWith('.')) {
          const target = path.relative(SRC, path.resolve(path.dirname(file), spec));
          const top = target.split(path.sep)[0];
          if (top && IO_FOLDERS.includes(top)) problems.push(`${rel} imports ${spec}`);
          continue;
        }
        const bare = spec.replace(/^node:/, '');
        if (bare === 'net' && names && names.every((n) => PURE_NET.has(n))) continue;
        if (IO_MODULES.includes(bare)) problems.push(`${rel} imports ${spec}`);
        else if (!spec.startsWith('node:') && spec !== 'eta') problems.push(`${rel} imports the package ${spec}`);
      }
      // Nothing of the process or the clock either: they come in as arguments.
      for (const m of text.matchAll(/\b(process\.\w+|Date\.now\(|Math\.random\(|setTimeout\(|setInterval\()/g)) {
        if (!isInComment(text, m.index ?? 0)) problems.push(`${rel} uses ${m[1]}`);
      }
    }
  }
  assert.ok(files >= 8, `only ${files} files read`);
  assert.deepEqual(problems, []);
});

function isInComment(text: string, at: number): boolean {
  const lineStart = text.lastIndexOf('\n', at) + 1;
  const line = text.slice(lineStart, at);
  if (/^\s*(\*|\/\/|\/\*)/.test(line) || line.includes('//')) return true;
  const open = text.lastIndexOf('/*', at);
  return open >= 0 && text.lastIndexOf('*/', at) < open;
}

test('the checker itself: it sees an import of src/runtime and an I/O module', () => {
  assert.deepEqual(
    imports("import { a } from '../runtime/index.js';\nimport type { B } from './x.js';\nimport fs from 'node:fs';\nexport * from './y.js';\nconst m = await import('node:child_process');"),
    [
      { spec: '../runtime/index.js', names: ['a'] },
      { spec: './x.js', names: ['B'] },
      { spec: 'node:fs', names: null },
      { spec: './y.js', names: null },
      { spec: 'node:child_process', names: null },
    ],
  );
  assert.deepEqual(imports("import { isIP } from 'node:net';"), [{ spec: 'node:net', names: ['isIP'] }]);
});

test('src/cli.ts imports only src/daemon, src/config, src/watch (register), the logger and the errors', async () => {
  const allowed = [/^\.\/daemon\//, /^\.\/config\.js$/, /^\.\/watch\//, /^\.\/log\.js$/, /^\.\/errors\.js$/, /^node:/];
  const specs = imports(await readFile(path.join(SRC, 'cli.ts'), 'utf8')).map((i) => i.spec);
  assert.ok(specs.some((s) => s.startsWith('./daemon/')));
  assert.deepEqual(specs.filter((s) => !allowed.some((re) => re.test(s))), []);
});

test('healthPath: the template accepts exactly what the registry parser accepts', () => {
  const settings = { ...defaultSettings('/var/lib/hu'), httpsPort: null };
  const renders = (healthPath: string): boolean => {
    const svc: HttpService = { kind: 'http', name: 'web', upstreams: new Map(), domains: ['w.example'], urlReg: null, sslPassthrough: false, options: { ...DEFAULT_OPTIONS, healthPath } };
    try {
      renderConfig({ registry: { revision: '1', http: new Map([['web', svc]]), tcp: new Map() }, capacity: new Map(), settings });
      return true;
    } catch {
      return false;
    }
  };
  const candidates = ['/', '/health', '/ping?full=1', 'health', '/' + 'a'.repeat(255), '/' + 'a'.repeat(256), '/ä', '/a\u00a0b'];
  for (let c = 0; c < 0x80; c++) candidates.push(`/a${String.fromCharCode(c)}b`);
  let accepted = 0;
  for (const p of candidates) {
    const parsed = parseOptions(JSON.stringify({ healthPath: p }));
    assert.equal(renders(p), parsed.ok, `healthPath ${JSON.stringify(p)}: parser ${parsed.ok ? 'accepts' : 'refuses'} it, the template must too`);
    if (parsed.ok) accepted++;
  }
  // Characters HAProxy's config cannot carry in `option httpchk GET <path>` are refused by both.
  for (const c of [' ', '#', ';', '\\', "'", '"', '$', '`']) assert.equal(parseOptions(JSON.stringify({ healthPath: `/a${c}` })).ok, false, JSON.stringify(c));
  assert.ok(accepted > 80, `only ${accepted} accepted`);
});
