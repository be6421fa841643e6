/** Imported first by bench.ts: quiet the in-process src/ modules (pino reads LOG_LEVEL at import). */
process.env.LOG_LEVEL ??= 'warn';
export {};
