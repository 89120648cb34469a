export * from './topics.js';
export * from './errors.js';
export * from './inference.js';
export * from './frames.js';
export * from './messages.js';
export * from './manifest.js';
export * from './acl.js';
