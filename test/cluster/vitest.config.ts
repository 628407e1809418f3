import { defineConfig } from 'vitest/config';

/**
 * The operator-day test on a real single-node Kubernetes (deploy/cluster): `npm run test:cluster`. No global
 * setup (the test starts its own stack on the node's address); one file, one worker, long timeouts: every wait
 * inside the test is a condition poll with its own deadline.
 */
export default defineConfig({
  test: {
    root: new URL('../..', import.meta.url).pathname,
    include: ['test/cluster/**/*.test.ts'],
    env: { METERLINE_CLUSTER_TEST: '1' },
    testTimeout: 30 * 60_000,
    hookTimeout: 15 * 60_000,
    fileParallelism: false,
    pool: 'forks',
  },
});
