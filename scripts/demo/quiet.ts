/**
 * Imported first by main.ts: the src/ modules the demo loads (src/runtime, through testkit)
 * take their log level from LOG_LEVEL when imported; silent, so nothing but the demo writes
 * to its screen. `restoreLogLevel` puts the variable back for the children it starts.
 */
const before = process.env.LOG_LEVEL;
process.env.LOG_LEVEL = 'silent';

export function restoreLogLevel(): void {
  if (before === undefined) delete process.env.LOG_LEVEL;
  else process.env.LOG_LEVEL = before;
}
