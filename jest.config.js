/**
 * ESM TypeScript through ts-jest in transpile-only mode (isolatedModules): type checking
 * is `tsc -b`'s job, run by `npm test` first. Jest 29, not 30: Jest 30's resolver and
 * @swc/jest pull platform binaries this machine's registry does not serve, which breaks `npm ci`.
 */
export default {
  testEnvironment: '<rootDir>/test/support/jest-environment.cjs',
  extensionsToTreatAsEsm: ['.ts'],
  transform: {
    '^.+\\.ts$': ['ts-jest', { useESM: true, tsconfig: { isolatedModules: true, esModuleInterop: true, module: 'ESNext', target: 'ES2022', moduleResolution: 'Bundler', verbatimModuleSyntax: false } }],
  },
  moduleNameMapper: { '^(\\.{1,2}/.*)\\.js$': '$1' },
  testMatch: ['<rootDir>/**/test/**/*.test.ts'],
  testPathIgnorePatterns: ['/node_modules/', '/dist/'],
  testTimeout: 30000,
};
