/**
 * Assertions on values about to be written into haproxy.cfg or a Runtime API command:
 * integers in a range, ports, IP literals. One owner, used by src/render and src/runtime.
 * Each throws InvalidArgumentError naming the argument, with the value in its context.
 */
import { isIP } from 'node:net';
import { InvalidArgumentError } from './errors.js';

function invalid(argument: string, value: unknown, rule: string): never {
  throw new InvalidArgumentError(`invalid ${argument} ${JSON.stringify(value)}: ${rule}`, { argument, value });
}

/** Integer in [min, max]; a number, never a numeric string (no silent coercion). */
export function assertInt(value: unknown, min: number, max: number, argument: string): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    invalid(argument, value, `expected an integer ${min}-${max}`);
  }
  return value;
}

/** TCP port 1–65535 (HAProxy silently wraps 99999 to 34463, so range matters). */
export function assertPort(value: unknown, argument = 'port'): number {
  return assertInt(value, 1, 65535, argument);
}

/** IPv4 or IPv6 literal (no zone id, no brackets, no host names). Returns it unchanged. */
export function assertIp(value: unknown, argument = 'addr'): string {
  if (typeof value !== 'string' || !/^[0-9A-Fa-f:.]{2,45}$/.test(value) || isIP(value) === 0) {
    invalid(argument, value, 'expected an IPv4 or IPv6 literal');
  }
  return value;
}
