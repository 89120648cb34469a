/**
 * Jest's node environment runs each test file in its own vm realm, so a Float32Array made there is not an
 * `instanceof Float32Array` of the realm native addons (onnxruntime-node) answer in, and ort rejects its own
 * output tensors. Sharing the typed-array constructors of the outer realm fixes that without touching code.
 * It also kills the child processes a test file left running (see test/support/children.ts).
 */
const { TestEnvironment } = require('jest-environment-node');

const SHARED = [
  'ArrayBuffer', 'SharedArrayBuffer', 'DataView',
  'Int8Array', 'Uint8Array', 'Uint8ClampedArray', 'Int16Array', 'Uint16Array', 'Int32Array', 'Uint32Array',
  'Float32Array', 'Float64Array', 'BigInt64Array', 'BigUint64Array',
];

class SharedTypedArraysEnvironment extends TestEnvironment {
  constructor(config, context) {
    super(config, context);
    for (const name of SHARED) this.global[name] = globalThis[name];
  }

  /** Kills the children support code registered (test/support/children.ts) that are still running. */
  async teardown() {
    for (const child of this.global.__edgefleetChildren ?? []) {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }
    await super.teardown();
  }
}

module.exports = SharedTypedArraysEnvironment;
