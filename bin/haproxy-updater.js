#!/usr/bin/env node
// Entry point. In a checkout (src/ present) it runs the TypeScript sources through tsx (a
// runtime dependency), so `npx haproxy-updater` works straight after `npm ci` and a stale
// dist/ can never shadow the sources; an image that ships only dist/ runs the build.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const src = fileURLToPath(new URL('../src/cli.ts', import.meta.url));
const dist = fileURLToPath(new URL('../dist/cli.js', import.meta.url));
let mod;
if (!existsSync(src) && existsSync(dist)) {
  mod = await import(dist);
} else {
  const { register } = await import('tsx/esm/api');
  register();
  mod = await import('../src/cli.ts');
}
// Exit explicitly: watchers and sockets must not keep a finished command alive.
process.exit(await mod.main(process.argv.slice(2)));
