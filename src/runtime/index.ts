/** The HAProxy Runtime API client: worker CLI (`RuntimeClient`), master CLI (`MasterClient`), command families. */
export * from './command.js';
export * from './socket.js';
export * from './client.js';
export * from './servers.js';
export * from './stats.js';
export * from './info.js';
export * from './maps.js';
export * from './backends.js';
export * from './master.js';
export * from './ssl.js';
export * from './capabilities.js';
