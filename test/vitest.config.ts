import { defineConfig } from 'vitest/config';

/**
 * The folder decides what a test needs (test/unit/tooling/test-layout.test.ts checks it):
 * - unit: test/unit/<src folder>/, needing no service; npm run test:unit runs this project alone, with no
 *   global setup.
 * - integration: test/integration/<src folder>/ (Kafka, Redis, the registry, Jaeger, the emulator), the
 *   scenario suites test/e2e/ and test/reliability/, and test/chart/ (helm and kubeconform, built on first
 *   use; two of its files use Kafka and Redis). The global setup starts or reuses the services.
 * npm test runs both projects, the unit one first.
 */
export default defineConfig({
  test: {
    root: new URL('..', import.meta.url).pathname,
    testTimeout: 120_000,
    hookTimeout: 180_000,
    // Integration suites share one broker and one Redis on 2 cores; files run one at a time.
    fileParallelism: false,
    reporters: ['default', './test/support/summary-reporter.ts'],
    projects: [
      {
        extends: true,
        test: {
          name: 'unit',
          include: ['test/unit/**/*.test.ts'],
          // No shared service, so files may run side by side: as many as the cores allow less one (one at a
          // time on 2 cores, as in CI); npm run test:unit runs 4 at once, most of its time being waits.
          fileParallelism: true,
          sequence: { groupOrder: 0 },
        },
      },
      {
        extends: true,
        test: {
          name: 'integration',
          include: [
            'test/integration/**/*.test.ts',
            'test/e2e/**/*.test.ts',
            'test/reliability/**/*.test.ts',
            'test/chart/**/*.test.ts',
          ],
          // The operator's day on a real cluster (test/cluster/) has its own command and config: npm run test:cluster.
          exclude: ['**/node_modules/**'],
          globalSetup: ['test/support/global-setup.ts'],
          sequence: { groupOrder: 1 },
        },
      },
    ],
  },
});
