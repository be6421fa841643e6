#!/usr/bin/env node
// Entry point. It runs the compiled dist/ (`npm run build`) when that is at least as new as
// every file in src/, and the TypeScript sources through tsx (a runtime dependency)
// otherwise, so `npx haproxy-updater` works straight after `npm ci` and a stale dist/ can
// never shadow the sources; an image that ships only dist/ runs the build. dist/ because
// tsx transpiles every module at start in a loader thread: about 0.5 s and a second V8
// heap's worth of RSS (see bench/README.md, "cold start").
import { existsSync, readdirSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const src = fileURLToPath(new URL('../src/cli.ts', import.meta.url));
const dist = fileURLToPath(new URL('../dist/cli.js', import.meta.url));
// `npx haproxy-updater` runs us as npm -> sh -c -> node. npm forwards SIGTERM/SIGINT to that
// shell, which dies of it and leaves this process orphaned, still running HAProxy or keeping a
// registration's lease alive. So when npm started us, our parent's death means: stop, as on
// SIGTERM (graceful: the current step finishes, a registration is removed). Only under npm,
// so that `haproxy-updater run &` from a shell that later exits keeps its old meaning.
if (process.env.npm_command !== undefined || process.env.npm_lifecycle_event !== undefined) {
  const parent = process.ppid;
  const orphanCheck = setInterval(() => {
    if (process.ppid === parent) return;
    clearInterval(orphanCheck);
    process.kill(process.pid, 'SIGTERM');
  }, 200);
  orphanCheck.unref();
}
/** Newest modification time of a file under `dir` (ms). */
function newest(dir) {
  let t = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = `${dir}/${e.name}`;
    t = Math.max(t, e.isDirectory() ? newest(p) : statSync(p).mtimeMs);
  }
  return t;
}
const distFresh = () => existsSync(dist) && (!existsSync(src) || statSync(dist).mtimeMs >= newest(fileURLToPath(new URL('../src', import.meta.url))));
let mod;
if (process.env.HAPROXY_UPDATER_FROM !== 'src' && distFresh()) {
  mod = await import(dist);
} else {
  const { register } = await import('tsx/esm/api');
  register();
  mod = await import('../src/cli.ts');
}
// Exit explicitly: watchers and sockets must not keep a finished command alive.
process.exit(await mod.main(process.argv.slice(2)));
