/**
 * Library entry of the local stack (Kafka, Redis, the Metering emulator, the schema registry) without Docker.
 * Used by `npm run stack:*` (stack.ts), the demo and the vitest globalSetup:
 *
 *   const env = await ensureStack();      // starts what is not running/healthy, reuses the rest
 *   Object.assign(process.env, env);      // KAFKA_BROKERS, REDIS_URL, AWS_ENDPOINT_URL_MARKETPLACE_METERING,
 *                                         // SCHEMA_REGISTRY_URL
 *   …
 *   await stopStack();                    // stops only what the stack started, by pid
 *
 * Endpoints already set in the environment always win: such a service is only checked, never started.
 */
import { rmSync } from 'node:fs';
import { emulatorService } from './emulator.ts';
import { jaegerService, otlpEndpointOf } from './jaeger.ts';
import { kafkaService } from './kafka.ts';
import { LOCALHOST } from './ports.ts';
import { rssKb } from './proc.ts';
import { redisService } from './redis.ts';
import { redisClusterService } from './redis-cluster.ts';
import { registryService } from './registry.ts';
import { type ServiceContext, StackError, type StackService, stopService, waitHealthy } from './service.ts';
import {
  isRecordAlive,
  readState,
  type ServiceName,
  type ServiceRecord,
  type StackPaths,
  stackPaths,
  withStackLock,
  writeState,
} from './state.ts';

export type { ServiceContext, StackService } from './service.ts';
export { StackError } from './service.ts';
export type { ServiceName, ServiceRecord } from './state.ts';

/** Every service, in start order (they start concurrently; this order is used for output). */
export const SERVICES: readonly StackService[] = [
  kafkaService,
  redisService,
  emulatorService,
  registryService,
  jaegerService,
  redisClusterService,
];

/** Tracing (and so Jaeger in the local stack) is on unless METERLINE_TRACING is off/0/false. */
export function tracingWanted(env: NodeJS.ProcessEnv = process.env): boolean {
  return !/^(off|0|false|no)$/i.test(env.METERLINE_TRACING ?? '');
}

/** Where the app sends spans (standard OpenTelemetry variable); set from the stack's Jaeger. */
export const OTLP_ENV = 'OTEL_EXPORTER_OTLP_ENDPOINT';

export const SERVICE_NAMES: readonly ServiceName[] = SERVICES.map((s) => s.name);

/** What `ensureStack()` and a bare `stack:up` start: every service but the optional ones (the Redis Cluster). */
export const DEFAULT_SERVICE_NAMES: readonly ServiceName[] = SERVICES.filter((s) => !s.optional).map(
  (s) => s.name,
);

export interface StackEnv {
  KAFKA_BROKERS: string;
  REDIS_URL: string;
  AWS_ENDPOINT_URL_MARKETPLACE_METERING: string;
  /** Confluent-compatible schema registry base URL (Apicurio's `/apis/ccompat/v7`). */
  SCHEMA_REGISTRY_URL: string;
  /** Services this call started (empty when everything was reused or external). */
  started: string[];
}

export interface StackOptions {
  /** Repository root (default: two levels above deploy/stack). `.stack/` is created under it. */
  root?: string;
  /** Environment to read endpoint overrides from and pass to services (default: process.env). */
  env?: NodeJS.ProcessEnv;
  /** Progress lines (default: stderr). Pass `() => {}` to silence. */
  log?: (line: string) => void;
  /**
   * The address every service listens on and advertises (default 127.0.0.1, or METERLINE_STACK_HOST).
   * Use an address of this machine only, e.g. its own interface for pods of a local cluster. It applies to
   * services this call starts; a running stack keeps its address (stop it first to change it).
   */
  host?: string;
}

export interface EnsureOptions extends StackOptions {
  /** How long an endpoint from the environment may take to answer (default 30 s). */
  externalTimeoutMs?: number;
  /** Override every service's readiness timeout (default: per service, 90 s for Kafka). */
  readyTimeoutMs?: number;
}

export type ServiceOutcome = 'external' | 'reused' | 'started';

export interface EnsureResult {
  /** Endpoint per requested service, keyed by its environment variable. */
  env: Record<string, string>;
  outcomes: Partial<Record<ServiceName, ServiceOutcome>>;
  started: ServiceName[];
}

const defaultLog = (line: string) => process.stderr.write(`${line}\n`);

function serviceByName(name: ServiceName): StackService {
  const svc = SERVICES.find((s) => s.name === name);
  if (!svc) throw new StackError(`unknown service ${name} (known: ${SERVICE_NAMES.join(', ')})`);
  return svc;
}

function context(paths: StackPaths, options: StackOptions, svc: StackService): ServiceContext {
  const log = options.log ?? defaultLog;
  const env = options.env ?? process.env;
  return {
    paths,
    env,
    log: (line) => log(`[${svc.name}] ${line}`),
    host: options.host ?? env.METERLINE_STACK_HOST ?? LOCALHOST,
  };
}

/**
 * The endpoint from the environment when it points somewhere else than our own recorded process. (After
 * `eval "$(stack env)"` the variables name our services; they must not turn them into "external" ones.)
 */
function externalEndpoint(
  svc: StackService,
  env: NodeJS.ProcessEnv,
  record: ServiceRecord | undefined,
): string | undefined {
  const value = env[svc.envVar];
  return value && value !== record?.endpoint ? value : undefined;
}

async function isHealthy(svc: StackService, endpoint: string): Promise<boolean> {
  try {
    await svc.health(endpoint);
    return true;
  } catch {
    return false;
  }
}

/**
 * Ensures the named services are up and healthy; returns their endpoints. A recorded process that is alive and
 * healthy is reused as is; one that is dead is started again (same ports when still free). Failures of one
 * service don't stop the others from coming up; they are reported together at the end.
 */
export async function ensureServices(
  names: readonly ServiceName[],
  options: EnsureOptions = {},
): Promise<EnsureResult> {
  const paths = stackPaths(options.root);
  const env = options.env ?? process.env;
  const log = options.log ?? defaultLog;
  const services = [...new Set(names)].map(serviceByName);

  return withStackLock(
    paths,
    async () => {
      const state = readState(paths);
      const record = (name: ServiceName, rec: ServiceRecord) => {
        state.services[name] = rec;
        writeState(paths, state); // at once, so `down` can stop it even if readiness fails
      };

      const ensureOne = async (svc: StackService): Promise<[string, ServiceOutcome]> => {
        const ctx = context(paths, options, svc);
        const previous = state.services[svc.name];
        const external = externalEndpoint(svc, env, previous);
        if (external) {
          ctx.log(`${svc.envVar} is set: using ${external} (not starting one)`);
          await waitHealthy(svc, external, ctx, {
            timeoutMs: options.externalTimeoutMs ?? 30_000,
            what: `${svc.envVar}=${external}`,
          });
          return [external, 'external'];
        }
        if (isRecordAlive(previous)) {
          if (await isHealthy(svc, previous.endpoint)) {
            ctx.log(`reusing pid ${previous.pid} at ${previous.endpoint}`);
            return [previous.endpoint, 'reused'];
          }
          ctx.log(`pid ${previous.pid} is alive but not healthy yet; waiting for it`);
          try {
            await waitHealthy(svc, previous.endpoint, ctx, {
              timeoutMs: options.readyTimeoutMs ?? svc.readyTimeoutMs,
              record: previous,
            });
            ctx.log(`reusing pid ${previous.pid} at ${previous.endpoint}`);
            return [previous.endpoint, 'reused'];
          } catch (err) {
            ctx.log(`${(err as Error).message.split('\n')[0]}; restarting it`);
            await stopService(svc, previous, ctx);
          }
        }
        const t0 = Date.now();
        const rec = await svc.start(ctx, previous);
        record(svc.name, rec);
        try {
          await waitHealthy(svc, rec.endpoint, ctx, {
            timeoutMs: options.readyTimeoutMs ?? svc.readyTimeoutMs,
            record: rec,
          });
        } catch (err) {
          // Don't leave a half-started process behind; its log stays for inspection.
          await stopService(svc, rec, ctx).catch(() => {});
          throw err;
        }
        ctx.log(`ready at ${rec.endpoint} in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
        return [rec.endpoint, 'started'];
      };

      const settled = await Promise.allSettled(services.map(ensureOne));
      const result: EnsureResult = { env: {}, outcomes: {}, started: [] };
      const errors: string[] = [];
      settled.forEach((s, i) => {
        const svc = services[i] as StackService;
        if (s.status === 'fulfilled') {
          const [endpoint, outcome] = s.value;
          result.env[svc.envVar] = endpoint;
          const otlp = svc.name === 'jaeger' ? otlpEndpointOf(state.services.jaeger) : undefined;
          if (otlp && outcome !== 'external') result.env[OTLP_ENV] = otlp;
          result.outcomes[svc.name] = outcome;
          if (outcome === 'started') result.started.push(svc.name);
        } else {
          errors.push(s.reason instanceof Error ? s.reason.message : String(s.reason));
        }
      });
      if (errors.length > 0) {
        const ok = Object.entries(result.outcomes).map(([n, o]) => `${n} (${o})`);
        throw new StackError(
          errors.join('\n\n') +
            (ok.length ? `\n\n(healthy: ${ok.join(', ')}; stop with \`npm run stack:down\`)` : ''),
        );
      }
      return result;
    },
    { log },
  );
}

/**
 * Starts whatever of Kafka, Redis, the emulator and the schema registry isn't running and healthy (reusing a
 * healthy recorded stack), and returns the endpoints for the app's environment.
 */
export async function ensureStack(options: EnsureOptions = {}): Promise<StackEnv> {
  const result = await ensureServices(DEFAULT_SERVICE_NAMES, options);
  return {
    KAFKA_BROKERS: result.env.KAFKA_BROKERS as string,
    REDIS_URL: result.env.REDIS_URL as string,
    AWS_ENDPOINT_URL_MARKETPLACE_METERING: result.env.AWS_ENDPOINT_URL_MARKETPLACE_METERING as string,
    SCHEMA_REGISTRY_URL: result.env.SCHEMA_REGISTRY_URL as string,
    started: result.started,
  };
}

export interface StopOptions extends StackOptions {
  /** Also delete `.stack/` (data, logs, state) once everything is stopped. */
  purge?: boolean;
  /** Stop only these services (default: all that are recorded). */
  only?: readonly ServiceName[];
}

/**
 * Stops every process the stack recorded (and only those), by pid: SIGTERM, up to 30 s, then SIGKILL. Endpoints
 * from the environment are never touched. Ports stay recorded so the next start can reuse them (and the data).
 */
export async function stopStack(options: StopOptions = {}): Promise<ServiceName[]> {
  const paths = stackPaths(options.root);
  const stopped: ServiceName[] = [];
  await withStackLock(
    paths,
    async () => {
      const state = readState(paths);
      await Promise.all(
        SERVICES.map(async (svc) => {
          const rec = state.services[svc.name];
          if (options.only && !options.only.includes(svc.name)) return;
          if (!isRecordAlive(rec)) return;
          await stopService(svc, rec, context(paths, options, svc));
          stopped.push(svc.name);
        }),
      );
      if (!options.purge) writeState(paths, state);
    },
    options.log ? { log: options.log } : {},
  );
  if (options.purge) {
    rmSync(paths.dir, { recursive: true, force: true });
    (options.log ?? defaultLog)(`removed ${paths.dir}`);
  }
  return stopped;
}

export interface ServiceStatus {
  name: ServiceName;
  envVar: string;
  /** Set when the endpoint comes from the environment (the stack doesn't manage it). */
  external?: string;
  record?: ServiceRecord;
  alive: boolean;
  healthy?: boolean;
  rssKb?: number;
}

/** What the stack knows about each service, with liveness, RSS and (optionally) a health probe. */
export async function stackStatus(
  options: StackOptions & { probe?: boolean } = {},
): Promise<ServiceStatus[]> {
  const paths = stackPaths(options.root);
  const env = options.env ?? process.env;
  const state = readState(paths);
  return Promise.all(
    SERVICES.map(async (svc) => {
      const rec = state.services[svc.name];
      const external = externalEndpoint(svc, env, rec);
      const alive = isRecordAlive(rec);
      const status: ServiceStatus = { name: svc.name, envVar: svc.envVar, alive };
      if (rec) status.record = rec;
      if (external) status.external = external;
      if (alive && rec) {
        const rss = rssKb(rec.pid);
        if (rss !== undefined) status.rssKb = rss;
      }
      const endpoint = external ?? (alive ? rec?.endpoint : undefined);
      if (options.probe !== false && endpoint) status.healthy = await isHealthy(svc, endpoint);
      return status;
    }),
  );
}

/**
 * The current endpoints without starting anything: the environment's, else those of live recorded processes.
 * Services with neither are missing from the result.
 */
export function currentStackEnv(options: StackOptions = {}): Partial<Record<string, string>> {
  const paths = stackPaths(options.root);
  const env = options.env ?? process.env;
  const state = readState(paths);
  const out: Record<string, string> = {};
  for (const svc of SERVICES) {
    const rec = state.services[svc.name];
    const endpoint = externalEndpoint(svc, env, rec) ?? (isRecordAlive(rec) ? rec.endpoint : undefined);
    if (endpoint) out[svc.envVar] = endpoint;
    const otlp = svc.name === 'jaeger' && isRecordAlive(rec) ? otlpEndpointOf(rec) : undefined;
    if (otlp && !env[svc.envVar]) out[OTLP_ENV] = otlp;
  }
  return out;
}
