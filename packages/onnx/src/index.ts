export { readOnnxMetadata } from './metadata.js';
export { readOnnxMetadataFromFile } from './file-metadata.js';
export type { OnnxMetadata } from './metadata.js';
