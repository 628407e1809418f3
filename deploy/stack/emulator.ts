/**
 * The AWS Marketplace Metering emulator (`meterline emulator`), run from source with this same Node binary.
 * Customers come from METERLINE_CUSTOMERS, else deploy/demo/customers.json when it exists.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { reuseOrPickPorts } from './ports.ts';
import { spawnDetached } from './proc.ts';
import { StackError, type StackService } from './service.ts';
import { rel, type ServiceRecord } from './state.ts';

export const EMULATOR_HEALTH_PATH = '/_emulator/health';

export function customersFile(root: string, env: NodeJS.ProcessEnv): string | undefined {
  if (env.METERLINE_CUSTOMERS) return path.resolve(root, env.METERLINE_CUSTOMERS);
  const fallback = path.join(root, 'deploy', 'demo', 'customers.json');
  return existsSync(fallback) ? fallback : undefined;
}

export const emulatorService: StackService = {
  name: 'emulator',
  envVar: 'AWS_ENDPOINT_URL_MARKETPLACE_METERING',
  readyTimeoutMs: 30_000,

  async health(endpoint) {
    const url = new URL(EMULATOR_HEALTH_PATH, endpoint);
    const res = await fetch(url, { signal: AbortSignal.timeout(2_000) });
    await res.body?.cancel();
    if (res.status !== 200) throw new Error(`GET ${url.pathname} answered ${res.status}`);
  },

  async start(ctx, previous) {
    const main = path.join(ctx.paths.root, 'src', 'cli', 'main.ts');
    if (!existsSync(main)) throw new StackError(`emulator: ${rel(ctx.paths, main)} does not exist`);
    const customers = customersFile(ctx.paths.root, ctx.env);
    if (customers && !existsSync(customers)) {
      throw new StackError(`emulator: customers file ${customers} (METERLINE_CUSTOMERS) does not exist`);
    }
    const { ports } = await reuseOrPickPorts(['port'] as const, previous?.ports);
    const logFile = path.join(ctx.paths.logsDir, 'emulator.log');
    const args = [main, 'emulator', '--host', ctx.host, '--port', String(ports.port)];
    if (customers) args.push('--customers', customers);
    const proc = await spawnDetached(process.execPath, args, { cwd: ctx.paths.root, env: ctx.env, logFile });
    ctx.log(
      `started pid ${proc.pid} on ${ctx.host}:${ports.port}` +
        (customers ? ` (customers: ${rel(ctx.paths, customers)})` : ' (no customers file)'),
    );
    return {
      ...proc,
      ports,
      endpoint: `http://${ctx.host}:${ports.port}`,
      log: rel(ctx.paths, logFile),
      startedAt: new Date().toISOString(),
      ...(customers ? { meta: { customers: rel(ctx.paths, customers) } } : {}),
    } satisfies ServiceRecord;
  },
};
