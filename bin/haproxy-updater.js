#!/usr/bin/env node
// Entry point: runs the compiled build when present (`npm run build`), else the
// TypeScript sources through tsx (a runtime dependency), so `npx haproxy-updater`
// works straight after `npm ci`.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const dist = fileURLToPath(new URL('../dist/cli.js', import.meta.url));
let mod;
if (existsSync(dist)) {
  mod = await import(dist);
} else {
  const { register } = await import('tsx/esm/api');
  register();
  mod = await import('../src/cli.ts');
}
// Exit explicitly: watchers and sockets must not keep a finished command alive.
process.exit(await mod.main(process.argv.slice(2)));
