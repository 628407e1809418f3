/** `meterline processor`, `worker` and `run`. */
import type { Command } from 'commander';
import { startPipeline } from '../pipeline.ts';
import { loadConfigOrExit, roleLogger, untilSignal } from './lifecycle.ts';

const ENV_HELP = `
Configuration comes from the environment (or a file named by METERLINE_CONFIG); see README.md.
Required: KAFKA_BROKERS, REDIS_URL, METERLINE_PLAN; the worker also needs AWS_REGION and METERLINE_CUSTOMERS.`;

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
    program
      .command(role.name)
      .description(role.description)
      .addHelpText('after', ENV_HELP)
      .action(async () => {
        const config = loadConfigOrExit([
          ...(role.processor ? (['processor'] as const) : []),
          ...(role.worker ? (['worker'] as const) : []),
        ]);
        const logger = roleLogger(role.name, config);
        const pipeline = await startPipeline(config, logger, {
          processor: role.processor,
          worker: role.worker,
        });
        logger.info(
          { topics: config.topics, products: config.plan.products.map((p) => p.productCode) },
          `meterline ${role.name} started`,
        );
        await untilSignal(logger, () => pipeline.stop());
      });
  }
}
