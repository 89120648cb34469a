export { readOnnxMetadata } from './metadata.js';
export type { OnnxMetadata } from './metadata.js';
