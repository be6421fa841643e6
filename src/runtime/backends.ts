/**
 * Backend commands: `show backend` and its parser; on 3.4+ (capability `dynamicBackends`)
 * `add backend <be> from <defaults>`, `publish`/`unpublish backend`, `del backend`.
 * Tried on 3.4.7: a new backend is unpublished until `publish backend`; `del backend`
 * answers "Only a backend without server can be deleted." while servers remain.
 */
import { ReplyParseError } from '../errors.js';
import { assertBackendName, makeCommand, type Command } from './command.js';

export function showBackend(): Command {
  return makeCommand('show backend');
}

/** `# name` header then one backend name per line. */
export function parseBackendList(text: string): string[] {
  const lines = text.split('\n').filter((l) => l.trim() !== '');
  if (lines[0] !== '# name') throw new ReplyParseError('show backend: missing "# name" header', { reply: text.slice(0, 200) });
  return lines.slice(1).map((l) => l.trim());
}

/** `add backend <be> from <defaults>`: settings come from the *named* defaults section. */
export function addBackend(backend: string, fromDefaults: string): Command {
  return makeCommand(`add backend ${assertBackendName(backend)} from ${assertBackendName(fromDefaults, 'defaults')}`);
}

export function publishBackend(backend: string): Command {
  return makeCommand(`publish backend ${assertBackendName(backend)}`);
}

export function unpublishBackend(backend: string): Command {
  return makeCommand(`unpublish backend ${assertBackendName(backend)}`);
}

export function delBackend(backend: string): Command {
  return makeCommand(`del backend ${assertBackendName(backend)}`);
}
