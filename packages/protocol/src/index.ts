export * from './topics.js';
export * from './errors.js';
export * from './messages.js';
export * from './manifest.js';
export * from './acl.js';
export * from './limits.js';
export * from './ids.js';
export * from './records.js';
