/** `meterline processor`, `worker` and `run`. */
import type { Command } from 'commander';
import { type PipelineOptions, startPipeline } from '../app/pipeline.ts';
import { loadConfigOrExit, roleLogger, untilSignal } from './lifecycle.ts';
import { withExamples } from './output.ts';

const ENV_HELP = `
Configuration comes from the environment (or a file named by METERLINE_CONFIG); see docs/configuration.md.
Required: KAFKA_BROKERS, REDIS_URL, METERLINE_PLAN; the worker also needs AWS_REGION. SaaS tenants are mapped
to AWS by METERLINE_CUSTOMERS (a file) and by registration (meterline registration).
/metrics, /healthz and /readyz listen on METERLINE_OPS_PORT: by default 9464 for processor and run, 9465 for
worker (9466 for registration, 9467 for console), so a processor and a worker run side by side on one host.
Logs go to stderr.`;

const EXAMPLES: Record<string, string[]> = {
  processor: ['meterline processor', 'METERLINE_OPS_PORT=9500 meterline processor'],
  worker: [
    'meterline worker',
    'AWS_ENDPOINT_URL_MARKETPLACE_METERING=http://127.0.0.1:4566 meterline worker',
  ],
  run: ['meterline run', 'LOG_LEVEL=debug meterline run'],
};

export function registerPipelineCommands(program: Command): void {
  const roles = [
    {
      name: 'processor',
      description: 'windowing processor and commit stage: usage topic → Redis → submission topic',
      processor: true,
      worker: false,
    },
    {
      name: 'worker',
      description: 'metering worker: submission topic → AWS BatchMeterUsage',
      processor: false,
      worker: true,
    },
    {
      name: 'run',
      description: 'processor, commit stage and worker in one process (small installs, the demo)',
      processor: true,
      worker: true,
    },
  ] as const;
  for (const role of roles) {
    const command = program.command(role.name).description(role.description).addHelpText('after', ENV_HELP);
    withExamples(command, EXAMPLES[role.name] ?? []).action(async () => {
      const config = loadConfigOrExit([
        ...(role.processor ? (['processor'] as const) : []),
        ...(role.worker ? (['worker'] as const) : []),
      ]);
      const logger = roleLogger(role.name, config);
      const pipeline = await startPipeline(config, logger, {
        processor: role.processor,
        worker: role.worker,
        ...crashPointForTests(),
      });
      logger.info(
        { topics: config.topics, products: config.plan.products.map((p) => p.productCode) },
        `meterline ${role.name} started`,
      );
      await untilSignal(logger, () => pipeline.stop());
    });
  }
}

/**
 * METERLINE_TEST_KILL_AT=after-freeze|after-emit makes the process kill -9 itself at that point of the
 * commit stage: the crash tests use it to hit the gaps between freezing, emitting and marking exactly.
 */
function crashPointForTests(): Pick<PipelineOptions, 'commitFaults'> {
  const at = process.env.METERLINE_TEST_KILL_AT;
  if (!at) return {};
  const die = () => process.kill(process.pid, 'SIGKILL');
  if (at === 'after-freeze') return { commitFaults: { afterFreeze: die } };
  if (at === 'after-emit') return { commitFaults: { afterEmit: die } };
  throw new Error(`METERLINE_TEST_KILL_AT must be after-freeze or after-emit, not "${at}"`);
}
