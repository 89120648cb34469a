import { describe, expect, it } from '@jest/globals';

// Aedes 1.x, lowdb 7 and yargs 18 are ESM-only; onnxruntime-node is installed with
// its GPU download skipped (.npmrc). This proves the module format and Jest set-up load all of them.
describe('module format', () => {
  it('imports the ESM-only dependencies and runs each', async () => {
    const { Aedes } = await import('aedes');
    const broker = await Aedes.createBroker();
    expect(typeof broker.handle).toBe('function');
    await new Promise<void>((resolve) => broker.close(() => resolve()));

    const { Low, Memory } = await import('lowdb');
    const db = new Low(new Memory<{ n: number }>(), { n: 0 });
    db.data.n = 1;
    await db.write();
    expect(db.data.n).toBe(1);

    const { default: yargs } = await import('yargs');
    const argv = await yargs(['--x', '2']).parse();
    expect(argv['x']).toBe(2);
  });

  it('loads onnxruntime-node with its bundled CPU binary', async () => {
    const ort = await import('onnxruntime-node');
    const tensor = new ort.Tensor('float32', new Float32Array([1, 2]), [2]);
    expect(tensor.dims).toEqual([2]);
    expect(ort.env.versions.common).toMatch(/^\d+\.\d+/);
  });
});
