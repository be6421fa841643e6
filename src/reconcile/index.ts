export * from './types.js';
export * from './slots.js';
export * from './domains.js';
export * from './observe.js';
export * from './plan.js';
export * from './dynamic.js';
export * from './decide.js';
export * from './describe.js';
