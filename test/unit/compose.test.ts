/**
 * docker-compose.yml and Dockerfile against the flag table. (The stack itself runs in
 * `npm run test:compose`, test/compose/run.sh; this file is the fast static check.)
 * The compose file is validated with Debian's `docker-compose config` (1.29) and its
 * normalized output (anchors merged, variables interpolated) is read with a small reader
 * for the block YAML that PyYAML emits. Every haproxy-updater invocation must use a real
 * command and flags of that command, every HAPROXY_UPDATER_* variable must be a flag, and
 * the pieces must agree with each other (sockets, state dir, ports, first render).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, type ExecFileException } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { COMMANDS, FLAGS, Flags, envName, parseArgv, type Command } from '../../src/config.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const COMPOSE_FILE = path.join(ROOT, 'docker-compose.yml');
/** Read by `docker-compose` beside the compose file when no -f is given: published ports. */
const COMPOSE_OVERRIDE = path.join(ROOT, 'docker-compose.override.yml');
/** The override of `npm run test:compose` (host networking, local images). */
const TEST_OVERRIDE = path.join(ROOT, 'test/compose/docker-compose.test.yml');
const DOCKERFILE = path.join(ROOT, 'Dockerfile');
const UPDATER_BIN = '/app/bin/haproxy-updater.js';

// ---------------------------------------------------------------------------------------
// running docker-compose

interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

function run(file: string, args: string[], env: NodeJS.ProcessEnv, cwd = ROOT): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    execFile(file, args, { env, cwd, timeout: 60_000, maxBuffer: 16 << 20 }, (err: ExecFileException | null, stdout, stderr) => {
      if (err && err.code === 'ENOENT') {
        reject(
          new Error(
            `${file} not found on PATH: install the Debian package 'docker-compose' ` +
              `(scripts/bootstrap.sh installs it: apt-get install -y docker-compose)`,
          ),
        );
        return;
      }
      const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
      resolve({ code, stdout: String(stdout), stderr: String(stderr) });
    });
  });
}

/**
 * `docker-compose config` on the repository's compose files (what a plain `docker-compose up`
 * reads: docker-compose.yml + docker-compose.override.yml) with a controlled environment:
 * no HAPROXY_UPDATER_* / HAPROXY_BRANCH from the caller's shell and an empty env file instead
 * of a local `.env`, so the result shows what the files themselves provide.
 */
async function composeConfig(extraEnv: Record<string, string> = {}, quiet = false, files = [COMPOSE_FILE, COMPOSE_OVERRIDE]): Promise<RunResult> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'hu-compose-'));
  try {
    const envFile = path.join(dir, 'empty.env');
    await writeFile(envFile, '');
    const env: NodeJS.ProcessEnv = {};
    for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('HAPROXY_UPDATER_') && !k.startsWith('HU_') && k !== 'HAPROXY_BRANCH') env[k] = v;
    Object.assign(env, extraEnv);
    const f = files.flatMap((x) => ['-f', x]);
    return await run('docker-compose', ['--env-file', envFile, '--project-directory', ROOT, ...f, 'config', ...(quiet ? ['-q'] : [])], env);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------
// a reader for the block YAML PyYAML writes (`docker-compose config` output): mappings,
// indentless sequences, plain / 'single' / "double" quoted scalars folded over lines, {} []

type Yaml = string | Yaml[] | { [k: string]: Yaml };

interface Line {
  indent: number;
  text: string;
}

function parseComposeYaml(src: string): Yaml {
  const lines: Line[] = [];
  for (const raw of src.split('\n')) {
    if (raw.trim() === '' || raw.trimStart().startsWith('#')) continue;
    const indent = raw.length - raw.trimStart().length;
    lines.push({ indent, text: raw.slice(indent) });
  }
  let i = 0;

  /** A scalar starting with `first` on a line whose structure sits at `indent`. */
  function scalar(first: string, indent: number): Yaml {
    // Collect continuation lines (deeper than the owning key / dash).
    const parts = [first];
    while (i < lines.length && lines[i]!.indent > indent) parts.push(lines[i++]!.text);
    if (first === '{}') return {};
    if (first === '[]') return [];
    const text = parts.join('\n');
    if (text.startsWith("'")) {
      assert.ok(text.endsWith("'"), `unterminated single-quoted scalar: ${text}`);
      return text.slice(1, -1).replace(/\s*\n\s*/g, ' ').replaceAll("''", "'");
    }
    if (text.startsWith('"')) {
      assert.ok(text.endsWith('"'), `unterminated double-quoted scalar: ${text}`);
      const body = text.slice(1, -1).replace(/\\\n\s*/g, '').replace(/\s*\n\s*/g, ' ');
      return body.replace(/\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|.)/g, (_, e: string) => {
        if (e.length > 1) return String.fromCodePoint(parseInt(e.slice(1), 16));
        const map: Record<string, string> = { n: '\n', t: '\t', r: '\r', '0': '\0', ' ': ' ', '/': '/', '"': '"', '\\': '\\', _: '\u00a0', N: '\u0085', L: '\u2028', P: '\u2029' };
        const v = map[e];
        assert.ok(v !== undefined, `unknown escape \\${e}`);
        return v;
      });
    }
    return text.replace(/\s*\n\s*/g, ' ');
  }

  /** key: value — splits on the first `: ` (or trailing `:`) outside quotes. */
  function splitKey(text: string): [string, string] | null {
    let key: string;
    let rest: string;
    if (text.startsWith("'") || text.startsWith('"')) {
      const q = text[0]!;
      let j = 1;
      while (j < text.length) {
        if (text[j] === q && q === "'" && text[j + 1] === "'") j += 2;
        else if (text[j] === '\\' && q === '"') j += 2;
        else if (text[j] === q) break;
        else j++;
      }
      key = scalar(text.slice(0, j + 1), Infinity) as string;
      rest = text.slice(j + 1);
      if (!rest.startsWith(':')) return null;
      rest = rest.slice(1);
    } else {
      const m = /^([^\s'"#][^:]*?):(?:\s|$)/.exec(text);
      if (!m) return null;
      key = m[1]!;
      rest = text.slice(m[1]!.length + 1);
    }
    return [key, rest.trim()];
  }

  function node(indent: number): Yaml {
    const line = lines[i]!;
    if (line.text === '-' || line.text.startsWith('- ')) return sequence(line.indent);
    return mapping(line.indent);
  }

  function sequence(indent: number): Yaml[] {
    const out: Yaml[] = [];
    while (i < lines.length && lines[i]!.indent === indent && (lines[i]!.text === '-' || lines[i]!.text.startsWith('- '))) {
      const line = lines[i]!;
      const rest = line.text.slice(1).trimStart();
      if (rest === '') {
        i++;
        out.push(node(indent + 1));
      } else if (splitKey(rest) && !/^['"]/.test(rest)) {
        // "- key: value" starts a mapping whose keys sit at indent + 2
        lines[i] = { indent: indent + 2, text: rest };
        out.push(mapping(indent + 2));
      } else {
        i++;
        out.push(scalar(rest, indent));
      }
    }
    return out;
  }

  function mapping(indent: number): { [k: string]: Yaml } {
    const out: { [k: string]: Yaml } = {};
    while (i < lines.length && lines[i]!.indent === indent) {
      const line = lines[i]!;
      if (line.text.startsWith('- ')) break;
      const kv = splitKey(line.text);
      assert.ok(kv, `cannot read YAML line: ${JSON.stringify(line.text)}`);
      const [key, rest] = kv;
      i++;
      if (rest !== '') {
        out[key] = scalar(rest, indent);
      } else if (i < lines.length && (lines[i]!.indent > indent || (lines[i]!.indent === indent && lines[i]!.text.startsWith('- ')))) {
        out[key] = node(indent);
      } else {
        out[key] = '';
      }
    }
    return out;
  }

  const doc = node(-1);
  assert.equal(i, lines.length, `YAML reader stopped at line: ${JSON.stringify(lines[i]?.text)}`);
  return doc;
}

function asMap(v: Yaml | undefined, what: string): { [k: string]: Yaml } {
  assert.ok(v !== undefined && typeof v === 'object' && !Array.isArray(v), `${what} is not a mapping`);
  return v;
}
function asList(v: Yaml | undefined, what: string): string[] {
  if (v === undefined) return [];
  assert.ok(Array.isArray(v), `${what} is not a list (write it in exec form)`);
  return v.map((x) => {
    assert.equal(typeof x, 'string', `${what}: non-string item`);
    return x as string;
  });
}
function asStr(v: Yaml | undefined): string | undefined {
  return typeof v === 'string' ? v : undefined;
}

// ---------------------------------------------------------------------------------------
// the Dockerfile

interface Instruction {
  op: string;
  args: string;
  stage: number;
}

function dockerfileInstructions(text: string): Instruction[] {
  const out: Instruction[] = [];
  let buf = '';
  let stage = -1;
  for (const raw of text.split('\n')) {
    const t = raw.trim();
    if (buf === '' && (t === '' || t.startsWith('#'))) continue;
    if (buf !== '' && t.startsWith('#')) continue; // comment inside a continuation
    if (t.endsWith('\\')) {
      buf += t.slice(0, -1) + ' ';
      continue;
    }
    buf += t;
    const m = /^(\S+)\s*(.*)$/s.exec(buf);
    buf = '';
    if (!m) continue;
    const op = m[1]!.toUpperCase();
    if (op === 'FROM') stage++;
    out.push({ op, args: m[2]!.trim(), stage });
  }
  return out;
}

/** Exec form (JSON array) of CMD / ENTRYPOINT / HEALTHCHECK CMD. */
function execForm(args: string, what: string): string[] {
  const json = args.replace(/^(?:--\S+\s+)*(?:CMD\s+)?/, '');
  let v: unknown;
  try {
    v = JSON.parse(json);
  } catch {
    assert.fail(`${what} is not in exec form (a JSON array): ${args}`);
  }
  assert.ok(Array.isArray(v) && v.every((x) => typeof x === 'string'), `${what}: not an array of strings`);
  return v as string[];
}

const dockerText = () => readFileSync(DOCKERFILE, 'utf8');
function finalStage(ins: Instruction[]): Instruction[] {
  const last = Math.max(...ins.map((x) => x.stage));
  return ins.filter((x) => x.stage === last);
}
function imageArgv(): { entrypoint: string[]; cmd: string[] } {
  const fin = finalStage(dockerfileInstructions(dockerText()));
  const ep = fin.filter((x) => x.op === 'ENTRYPOINT').at(-1);
  const cmd = fin.filter((x) => x.op === 'CMD').at(-1);
  assert.ok(ep && cmd, 'Dockerfile: final stage needs ENTRYPOINT and CMD');
  return { entrypoint: execForm(ep.args, 'ENTRYPOINT'), cmd: execForm(cmd.args, 'CMD') };
}

// ---------------------------------------------------------------------------------------
// haproxy-updater invocations

/** Splits a POSIX shell script into words, keeping `;` `&&` `||` `|` as separate tokens. */
function shellWords(script: string): string[] {
  const out: string[] = [];
  let cur = '';
  let inWord = false;
  for (let j = 0; j < script.length; j++) {
    const c = script[j]!;
    if (c === "'") {
      const end = script.indexOf("'", j + 1);
      assert.ok(end > j, `unterminated ' in: ${script}`);
      cur += script.slice(j + 1, end);
      j = end;
      inWord = true;
    } else if (c === '"') {
      let k = j + 1;
      while (k < script.length && script[k] !== '"') {
        if (script[k] === '\\' && k + 1 < script.length) {
          cur += script[k + 1];
          k += 2;
        } else cur += script[k++];
      }
      assert.ok(k < script.length, `unterminated " in: ${script}`);
      j = k;
      inWord = true;
    } else if (c === '\\' && j + 1 < script.length) {
      cur += script[++j];
      inWord = true;
    } else if (/\s/.test(c) || c === ';' || c === '|' || c === '&') {
      if (inWord) out.push(cur);
      cur = '';
      inWord = false;
      if (c === ';') out.push(';');
      else if ((c === '|' || c === '&') && script[j + 1] === c) out.push(c + script[++j]);
      else if (c === '|' || c === '&') out.push(c);
    } else {
      cur += c;
      inWord = true;
    }
  }
  if (inWord) out.push(cur);
  return out;
}

interface Invocation {
  service: string;
  args: string[];
  env: Record<string, string>;
}

/** Shell variables the registrars compute at run time, with a sample value for parsing. */
const SHELL_SAMPLES: Record<string, string> = { ip: '172.18.0.5' };
/** `$name`, `${name}`, `${name:-default}` in a word: a sample, the service env or the default. */
const SHELL_VAR = /\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)/g;

function invocationsOf(service: string, svc: { [k: string]: Yaml }, image: { entrypoint: string[]; cmd: string[] }): Invocation[] {
  const entrypoint = svc.entrypoint !== undefined ? asList(svc.entrypoint, `${service}.entrypoint`) : image.entrypoint;
  const command = svc.command !== undefined ? asList(svc.command, `${service}.command`) : svc.entrypoint !== undefined ? [] : image.cmd;
  const argv = [...entrypoint, ...command].map((a) => a.replaceAll('$$', '$'));
  const envMap = svc.environment === undefined ? {} : asMap(svc.environment, `${service}.environment`);
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(envMap)) env[k] = String(asStr(v) ?? '').replaceAll('$$', '$');
  const found: Invocation[] = [];
  const isBin = (w: string) => w === UPDATER_BIN || w === 'haproxy-updater' || w.endsWith('/haproxy-updater');
  // Direct: [tini, --, node, /app/bin/haproxy-updater.js, <command>, ...]
  const direct = argv.findIndex(isBin);
  if (direct >= 0) found.push({ service, args: argv.slice(direct + 1), env });
  // Through a shell: sh -c '... exec node /app/bin/haproxy-updater.js register ...'
  for (let j = 0; j < argv.length - 1; j++) {
    if (!/(^|\/)(ba)?sh$/.test(argv[j]!) || !/^-[a-z]*c[a-z]*$/.test(argv[j + 1]!)) continue;
    const words = shellWords(argv[j + 2] ?? '');
    words.forEach((w, k) => {
      if (!isBin(w)) return;
      const args: string[] = [];
      for (const a of words.slice(k + 1)) {
        if ([';', '&&', '||', '|', '&'].includes(a)) break;
        args.push(
          a.replace(SHELL_VAR, (_, braced: string | undefined, dflt: string | undefined, bare: string | undefined) => {
            const name = (braced ?? bare)!;
            const v = SHELL_SAMPLES[name] ?? env[name] ?? dflt;
            assert.ok(v !== undefined, `${service}: shell variable $${name} in haproxy-updater arguments: add a sample value to SHELL_SAMPLES`);
            return v;
          }),
        );
      }
      found.push({ service, args, env });
    });
  }
  return found;
}

/** Validates every explicitly set flag with the accessor of its kind. */
function validateValues(f: Flags, command: Command, where: string): void {
  for (const spec of FLAGS.filter((x) => x.commands.includes(command))) {
    if (!f.isSet(spec.name)) continue;
    const ctx = `${where}: --${spec.name}`;
    assert.doesNotThrow(() => {
      switch (spec.kind) {
        case 'int':
          return f.int(spec.name, 0, Number.MAX_SAFE_INTEGER);
        case 'port':
          return f.port(spec.name);
        case 'optport':
          return f.optPort(spec.name);
        case 'bool':
          return f.bool(spec.name);
        case 'ms':
          return f.ms(spec.name);
        case 'list':
          return f.list(spec.name);
        case 'hostport':
          return f.hostPort(spec.name);
        case 'path':
          return f.path(spec.name);
        default:
          return f.str(spec.name);
      }
    }, ctx);
  }
}

// ---------------------------------------------------------------------------------------
// loading once

interface Stack {
  services: { [name: string]: { [k: string]: Yaml } };
  updaterServices: string[];
  invocations: Invocation[];
}

let stackPromise: Promise<Stack> | null = null;
function stack(): Promise<Stack> {
  stackPromise ??= (async () => {
    const res = await composeConfig();
    assert.equal(res.code, 0, `docker-compose config failed:\n${res.stderr}`);
    const doc = asMap(parseComposeYaml(res.stdout), 'compose config');
    const services = asMap(doc.services, 'services') as Stack['services'];
    for (const [name, s] of Object.entries(services)) asMap(s, `services.${name}`);
    const image = imageArgv();
    const updaterServices = Object.keys(services).filter((name) => {
      const s = services[name]!;
      const build = s.build === undefined ? undefined : asStr(asMap(s.build, `${name}.build`).context);
      return (build !== undefined && path.resolve(build) === path.resolve(ROOT)) || /haproxy-updater/.test(asStr(s.image) ?? '');
    });
    const invocations = updaterServices.flatMap((name) => invocationsOf(name, services[name]!, image));
    return { services, updaterServices, invocations };
  })();
  return stackPromise;
}

const flagOf = (arg: string) => arg.slice(2).split('=')[0]!;
const DEFAULT_LISTEN = FLAGS.find((f) => f.name === 'listen')?.default;

// ---------------------------------------------------------------------------------------
// tests

test('docker-compose config -q accepts the compose file', async () => {
  const res = await composeConfig({}, true);
  assert.equal(res.code, 0, `docker-compose config -q exited ${res.code}:\n${res.stderr}`);
});

test('every HAPROXY_UPDATER_* name in the compose file is the env var of a flag', () => {
  const text = readFileSync(COMPOSE_FILE, 'utf8');
  const known = new Set(FLAGS.map((f) => envName(f.name)));
  const names = new Set(text.match(/\bHAPROXY_UPDATER_[A-Z0-9_]+\b/g) ?? []);
  assert.ok(names.size > 0, 'no HAPROXY_UPDATER_* variables found: the sidecar should be configured through them');
  for (const n of names) assert.ok(known.has(n), `${n} is not the env var of any flag in src/config.ts`);
});

test('every haproxy-updater invocation uses a known command and flags of that command, with valid values', async () => {
  const { invocations, updaterServices } = await stack();
  assert.ok(updaterServices.length >= 4, `updater-image services: ${updaterServices.join(', ')}`);
  for (const name of updaterServices) {
    assert.ok(invocations.some((x) => x.service === name), `service ${name} (updater image) runs no haproxy-updater command that could be found`);
  }
  for (const inv of invocations) {
    const [cmd, ...rest] = inv.args;
    const where = `${inv.service}: haproxy-updater ${inv.args.join(' ')}`;
    assert.ok(cmd && (COMMANDS as readonly string[]).includes(cmd), `${where}: unknown command '${cmd}' (commands: ${COMMANDS.join(', ')})`);
    const command = cmd as Command;
    for (const a of rest.filter((x) => x.startsWith('--'))) {
      let name = flagOf(a);
      const spec = FLAGS.find((f) => f.name === name) ?? (name.startsWith('no-') ? FLAGS.find((f) => f.name === (name = name.slice(3)) && f.kind === 'bool') : undefined);
      assert.ok(spec, `${where}: unknown flag --${name}`);
      assert.ok(spec.commands.includes(command), `${where}: --${name} is not a flag of '${command}' (it is for: ${spec.commands.join(', ')})`);
    }
    for (const k of Object.keys(inv.env).filter((x) => x.startsWith('HAPROXY_UPDATER_'))) {
      assert.ok(FLAGS.some((f) => envName(f.name) === k), `${inv.service}: ${k} is not a flag's env var`);
    }
    // What the program itself would parse, values checked by kind.
    let parsed: ReturnType<typeof parseArgv> | undefined;
    assert.doesNotThrow(() => (parsed = parseArgv(inv.args, inv.env)), where);
    validateValues(new Flags(parsed!), command, where);
  }
});

test('the stack fits together: first render, external HAProxy, shared state, sockets, ports', async () => {
  const { services, invocations } = await stack();
  const svc = (name: string) => {
    const s = services[name];
    assert.ok(s, `service '${name}' missing (services: ${Object.keys(services).join(', ')})`);
    return s;
  };
  const only = (command: Command) => {
    const xs = invocations.filter((x) => x.args[0] === command);
    assert.ok(xs.length > 0, `no service runs '${command}'`);
    return xs;
  };
  const [runInv] = only('run');
  const [renderInv] = only('render');
  assert.equal(only('run').length, 1, 'exactly one service runs the daemon');
  assert.equal(runInv!.service, 'updater');
  assert.equal(renderInv!.service, 'render');
  const runF = new Flags(parseArgv(runInv!.args, runInv!.env));
  const renderF = new Flags(parseArgv(renderInv!.args, renderInv!.env));

  // etcd
  const etcdCmd = asList(svc('etcd').command, 'etcd.command').join(' ');
  assert.match(asStr(svc('etcd').image) ?? '', /^quay\.io\/coreos\/etcd:v3\.4\.\d+$/);
  assert.match(etcdCmd, /--listen-client-urls=http:\/\/0\.0\.0\.0:2379/);
  for (const inv of invocations) {
    const f = new Flags(parseArgv(inv.args, inv.env));
    for (const e of f.list('etcd')) assert.match(e, /^http:\/\/etcd:2379$/, `${inv.service}: reaches etcd by service name`);
  }

  // the daemon: external mode, sockets and config on the shared volume
  assert.equal(runF.str('haproxy'), 'external');
  const stateDir = runF.path('state-dir')!;
  assert.equal(stateDir, '/state');
  const master = runF.path('master-socket')!;
  const admin = runF.path('runtime-socket')!;
  assert.equal(path.dirname(master), stateDir);
  assert.equal(path.dirname(admin), stateDir);
  assert.equal(asStr(svc('updater').network_mode), 'service:haproxy');
  assert.ok(asList(svc('updater').cap_add, 'updater.cap_add').includes('NET_ADMIN'));
  assert.ok(['none', 'iptables'].includes(runF.str('reload-guard')!));

  // the first config: render writes what haproxy reads; same render settings as the daemon
  const out = renderF.path('out')!;
  assert.equal(out, path.join(stateDir, 'haproxy.cfg'));
  for (const spec of FLAGS.filter((f) => f.commands.includes('render') && f.commands.includes('run'))) {
    assert.equal(renderF.str(spec.name) ?? '', runF.str(spec.name) ?? '', `render and run disagree on --${spec.name}: the daemon's first step would be a reload`);
  }
  const haproxy = svc('haproxy');
  // HAProxy 3.2 LTS by default, and the updater image built on the same branch (its haproxy -c)
  assert.equal(asStr(haproxy.image), 'haproxy:3.2');
  for (const name of ['render', 'updater']) {
    const args = asMap(asMap(svc(name).build, `${name}.build`).args, `${name}.build.args`);
    assert.equal(asStr(args.HAPROXY_BRANCH), '3.2', `${name}: the updater image's HAProxy branch follows the haproxy service`);
  }
  const hCmd = asList(haproxy.command, 'haproxy.command').join(' ');
  assert.match(hCmd, /\bhaproxy -W\b/);
  assert.ok(hCmd.includes(`-S ${master},`) || hCmd.includes(`-S ${master} `), `haproxy command must create the master socket ${master}: ${hCmd}`);
  assert.ok(new RegExp(`-f ${out.replaceAll('.', '\\.')}(\\s|$)`).test(hCmd), `haproxy must read ${out}: ${hCmd}`);
  const dep = asMap(asMap(haproxy.depends_on, 'haproxy.depends_on').render, 'haproxy.depends_on.render');
  assert.equal(asStr(dep.condition), 'service_completed_successfully');

  // one named volume at the state dir in render, haproxy and updater
  const stateVolume = (name: string) => {
    const v = asList(svc(name).volumes, `${name}.volumes`).find((x) => x.split(':')[1] === stateDir);
    assert.ok(v, `${name} must mount the state volume at ${stateDir}`);
    return v.split(':')[0];
  };
  const vol = stateVolume('haproxy');
  assert.ok(vol && !vol.startsWith('/') && !vol.startsWith('.'), 'the state volume is a named volume');
  assert.equal(stateVolume('render'), vol);
  assert.equal(stateVolume('updater'), vol);

  // published ports: the container side of each is a port the config / daemon listens on
  const published = asList(haproxy.ports, 'haproxy.ports').map((p) => Number(/:(\d+)(\/tcp)?$/.exec(p)?.[1]));
  for (const p of [runF.port('http-port'), runF.optPort('https-port'), runF.optPort('stats-port'), runF.hostPort('listen')?.port]) {
    if (p) assert.ok(published.includes(p), `port ${p} is not published by the haproxy service (${published.join(', ')})`);
    // HAProxy runs as uid 99 and the stack sets no sysctl (host networking could not have one)
    if (p) assert.ok(p >= 1024, `container port ${p} is privileged: the non-root HAProxy cannot bind it`);
  }
  assert.equal(haproxy.sysctls, undefined, 'no sysctls: they are refused with host networking (test/compose)');
  const listen = runF.hostPort('listen');
  assert.ok(listen && listen.host === '0.0.0.0', '--listen must be reachable through the published port');

  // demo apps: each registrar shares its app's network namespace
  const registrations = only('register');
  assert.ok(registrations.length >= 2, 'two demo apps register themselves');
  for (const inv of registrations) {
    const f = new Flags(parseArgv(inv.args, inv.env));
    assert.ok(f.str('addr') && f.list('domain').length > 0, `${inv.service}: register needs --addr and --domain`);
    const nm = asStr(svc(inv.service).network_mode) ?? '';
    const app = /^service:(.+)$/.exec(nm)?.[1];
    assert.ok(app && services[app], `${inv.service}: network_mode must be service:<its app> (got '${nm}')`);
  }
});

test('no stats password is baked in; one from the environment reaches render and run', async () => {
  const { invocations } = await stack();
  for (const inv of invocations.filter((x) => ['run', 'render'].includes(x.args[0]!))) {
    const f = new Flags(parseArgv(inv.args, inv.env));
    assert.equal(f.str('stats-password'), undefined, `${inv.service}: a default stats password is set`);
    assert.equal(f.str('stats-password-file'), undefined, `${inv.service}: a default stats password file is set`);
  }
  const res = await composeConfig({ HAPROXY_UPDATER_STATS_PASSWORD: 's3cret-from-env' });
  assert.equal(res.code, 0, res.stderr);
  const services = asMap(asMap(parseComposeYaml(res.stdout), 'config').services, 'services');
  for (const name of ['render', 'updater']) {
    const env = asMap(asMap(services[name], name).environment, `${name}.environment`);
    assert.equal(env.HAPROXY_UPDATER_STATS_PASSWORD, 's3cret-from-env', name);
  }
});

test('Dockerfile: entry point runs bin/haproxy-updater.js through tini, CMD is a command', () => {
  const ins = dockerfileInstructions(dockerText());
  const fin = finalStage(ins);
  const { entrypoint, cmd } = imageArgv();
  assert.deepEqual(entrypoint, ['tini', '--', 'node', UPDATER_BIN]);
  assert.deepEqual(cmd, ['run']);
  assert.ok((COMMANDS as readonly string[]).includes(cmd[0]!));
  // /app/bin/haproxy-updater.js comes from the repository's bin/ (COPY bin ./bin in /app)
  assert.ok(existsSync(path.join(ROOT, 'bin/haproxy-updater.js')), 'bin/haproxy-updater.js missing');
  const workdir = fin.filter((x) => x.op === 'WORKDIR').at(-1)?.args;
  assert.equal(workdir, '/app');
  const copies = fin.filter((x) => x.op === 'COPY' && !x.args.includes('--from'));
  assert.ok(
    copies.some((c) => /^bin\/?\s+(\.\/bin|\/app\/bin)\/?$/.test(c.args)),
    `final stage must COPY bin to /app/bin (COPY lines: ${copies.map((c) => c.args).join(' | ')})`,
  );
  // dist and production node_modules from the builder stages; package.json for --version
  assert.ok(fin.some((x) => x.op === 'COPY' && /--from=\S+\s+\/app\/dist\s/.test(x.args)), 'final stage copies /app/dist from the build stage');
  assert.ok(fin.some((x) => x.op === 'COPY' && /--from=\S+\s+\/app\/node_modules\s/.test(x.args)), 'final stage copies node_modules');
  assert.ok(ins.some((x) => x.op === 'RUN' && /npm ci --omit=dev/.test(x.args)), 'production dependencies via npm ci --omit=dev');
  assert.ok(ins.some((x) => x.op === 'RUN' && /npm run build/.test(x.args)), 'TypeScript compiled in a build stage');
  const apt = fin.find((x) => x.op === 'RUN' && /apt-get install/.test(x.args))?.args ?? '';
  for (const pkg of ['iptables', 'tini']) assert.ok(apt.includes(pkg), `apt-get install lacks ${pkg}`);
  // The runtime stage is the HAProxy image of HAPROXY_BRANCH (3.2 LTS by default): the
  // updater's `haproxy -c` is the HAProxy that runs the config; Node comes from NODE_IMAGE.
  const globalArgs = ins.filter((x) => x.stage === -1 && x.op === 'ARG').map((x) => x.args);
  assert.ok(globalArgs.includes('HAPROXY_BRANCH=3.2'), `ARG HAPROXY_BRANCH=3.2 before the first FROM (${globalArgs.join(' | ')})`);
  assert.ok(globalArgs.includes('HAPROXY_IMAGE=haproxy:${HAPROXY_BRANCH}'), 'ARG HAPROXY_IMAGE=haproxy:${HAPROXY_BRANCH}');
  assert.ok(globalArgs.includes('NODE_IMAGE=node:22-bookworm-slim'), 'ARG NODE_IMAGE=node:22-bookworm-slim');
  assert.equal(ins.find((x) => x.op === 'FROM' && x.stage === fin[0]!.stage)?.args, '${HAPROXY_IMAGE}');
  assert.ok(fin.some((x) => x.op === 'RUN' && /haproxy -v .*version \$\{HAPROXY_BRANCH\}/.test(x.args)), 'the build checks the HAProxy branch');
  assert.ok(fin.some((x) => x.op === 'COPY' && /^--from=\S+\s+\/usr\/local\/bin\/node\s/.test(x.args)), 'node binary copied from the Node image');
  assert.equal(fin.filter((x) => x.op === 'STOPSIGNAL').at(-1)?.args, 'SIGTERM', "the HAProxy image's SIGUSR1 would start Node's inspector");
  const user = fin.filter((x) => x.op === 'USER').at(-1)?.args;
  assert.ok(user && !/^(root|0)(:|$)/.test(user), 'the image runs as a non-root user');
  // every file the build context must provide is present and not excluded by .dockerignore
  const ignore = readFileSync(path.join(ROOT, '.dockerignore'), 'utf8')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'));
  const excluded = (p: string) => {
    let out = false;
    for (const pat of ignore) {
      const neg = pat.startsWith('!');
      const body = (neg ? pat.slice(1) : pat).replace(/\/+$/, '');
      const re = new RegExp('^' + body.split('*').map((s) => s.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('[^/]*') + '(/|$)');
      if (re.test(p)) out = !neg;
    }
    return out;
  };
  for (const c of ins.filter((x) => x.op === 'COPY' && !x.args.includes('--from'))) {
    const srcs = c.args.split(/\s+/).slice(0, -1);
    for (const s of srcs) {
      const rel = s.replace(/^\.\//, '').replace(/\/+$/, '');
      assert.ok(existsSync(path.join(ROOT, rel)), `COPY source ${s} does not exist`);
      assert.ok(!excluded(rel), `COPY source ${s} is excluded by .dockerignore`);
    }
  }
  for (const p of ['node_modules', 'dist', '.git', 'test', '.env']) assert.ok(excluded(p), `.dockerignore should exclude ${p}`);
});

test('Dockerfile HEALTHCHECK probes /healthz on the --listen address', async (t) => {
  const hc = finalStage(dockerfileInstructions(dockerText())).find((x) => x.op === 'HEALTHCHECK');
  assert.ok(hc, 'no HEALTHCHECK');
  const argv = execForm(hc.args, 'HEALTHCHECK');
  assert.equal(argv[0], 'node');
  assert.equal(argv[1], '-e');
  const script = argv[2]!;
  assert.ok(script.includes('/healthz'), 'HEALTHCHECK must request /healthz');
  assert.ok(script.includes('HAPROXY_UPDATER_LISTEN'), 'HEALTHCHECK must follow HAPROXY_UPDATER_LISTEN');
  assert.ok(DEFAULT_LISTEN && script.includes(`'${DEFAULT_LISTEN}'`), `HEALTHCHECK default address should be the --listen default ${DEFAULT_LISTEN}`);

  // Run the one-liner for real against a local server.
  let status = 200;
  const paths: string[] = [];
  const server = http.createServer((req, res) => {
    paths.push(req.url ?? '');
    res.writeHead(req.url === '/healthz' ? status : 404).end();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.after(() => server.close());
  const port = (server.address() as AddressInfo).port;
  const probe = async (listen: string) => (await run(process.execPath, ['-e', script], { ...process.env, HAPROXY_UPDATER_LISTEN: listen })).code;
  assert.equal(await probe(`127.0.0.1:${port}`), 0, 'healthy → exit 0');
  assert.equal(await probe(`0.0.0.0:${port}`), 0, 'wildcard listen address is probed on loopback');
  status = 503;
  assert.equal(await probe(`127.0.0.1:${port}`), 1, 'unhealthy → exit 1');
  server.close();
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(await probe(`127.0.0.1:${port}`), 1, 'nothing listening → exit 1');
  assert.deepEqual([...new Set(paths)], ['/healthz']);
});

test('the compose test override changes only networking, listen ports and local images', async () => {
  const hu = {
    HU_ETCD_PORT: '20001', HU_ETCD_PEER_PORT: '20002', HU_HTTP_PORT: '20003', HU_HTTPS_PORT: '20004', HU_STATS_PORT: '20005',
    HU_LISTEN_PORT: '20006', HU_APP_A_PORT: '20007', HU_APP_B_PORT: '20008', HU_ETCD_IMAGE: 'local/etcd', HU_APP_IMAGE: 'local/app',
  };
  const read = async (files: string[]) => {
    const res = await composeConfig(hu, false, files);
    assert.equal(res.code, 0, res.stderr);
    return asMap(asMap(parseComposeYaml(res.stdout), 'config').services, 'services');
  };
  const base = await read([COMPOSE_FILE]);
  const test_ = await read([COMPOSE_FILE, TEST_OVERRIDE]);
  assert.deepEqual(Object.keys(test_).sort(), Object.keys(base).sort(), 'same services');
  const allowedEnv = /^(HAPROXY_UPDATER_(ETCD|HTTP_PORT|HTTPS_PORT|STATS_PORT|LISTEN)|WHOAMI_PORT_NUMBER|APP_IP|APP_PORT)$/;
  for (const [name, t] of Object.entries(test_)) {
    const b = asMap(base[name], name);
    const tt = asMap(t, name);
    assert.equal(asStr(tt.network_mode), 'host', `${name}: host networking`);
    for (const key of new Set([...Object.keys(b), ...Object.keys(tt)])) {
      if (JSON.stringify(b[key]) === JSON.stringify(tt[key])) continue;
      if (key === 'network_mode') continue;
      if (key === 'image') {
        assert.ok(['etcd', 'app-a', 'app-b'].includes(name), `${name}: image changed (HAProxy and the updater must keep theirs)`);
        continue;
      }
      if (key === 'environment') {
        const be = asMap(b.environment ?? {}, `${name}.environment`);
        const te = asMap(tt.environment, `${name}.environment`);
        for (const k of new Set([...Object.keys(be), ...Object.keys(te)])) {
          if (be[k] !== te[k]) assert.match(k, allowedEnv, `${name}: environment ${k} changed`);
        }
        continue;
      }
      assert.ok(name === 'etcd' && ['command', 'healthcheck'].includes(key), `${name}: ${key} changed by the test override`);
    }
  }
});
