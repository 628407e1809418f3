/**
 * Starts the OpenTelemetry Node SDK before the app: `node --import ./src/observability/otel-preload.ts
 * src/cli/main.ts <role>`. Configured by the standard variables only:
 *   OTEL_EXPORTER_OTLP_ENDPOINT (or _TRACES_ENDPOINT)  where traces go (OTLP; http/protobuf by default)
 *   OTEL_TRACES_SAMPLER / _ARG                        sampling (default parentbased_always_on)
 *   OTEL_SERVICE_NAME                                 default meterline-<role> (processor, worker, run, …)
 *   OTEL_SDK_DISABLED=true                            off
 * Without an OTLP endpoint nothing starts, and the SDK is not even loaded: a process with nowhere to send
 * spans pays nothing for them.
 * Metrics stay on Prometheus (/metrics), so the SDK's metric and log exporters are off unless asked for.
 */
import { registerTracingShutdown } from './tracing.ts';

const ROLES = ['processor', 'worker', 'run', 'produce', 'registration', 'dlq', 'status', 'trace'];

function enabled(env: NodeJS.ProcessEnv): boolean {
  if (/^(true|1)$/i.test(env.OTEL_SDK_DISABLED ?? '')) return false;
  if ((env.OTEL_TRACES_EXPORTER ?? '').split(',').includes('none')) return false;
  return Boolean(env.OTEL_EXPORTER_OTLP_ENDPOINT || env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT);
}

function roleOf(argv: readonly string[]): string {
  return argv.slice(2).find((a) => ROLES.includes(a)) ?? 'cli';
}

if (enabled(process.env)) {
  process.env.OTEL_METRICS_EXPORTER ??= 'none';
  process.env.OTEL_LOGS_EXPORTER ??= 'none';
  // Loaded only when used: the SDK takes seconds to load on a busy host, which `meterline --version` and
  // every one-shot command without tracing would otherwise pay.
  const { NodeSDK } = await import('@opentelemetry/sdk-node');
  const sdk = new NodeSDK({
    serviceName: process.env.OTEL_SERVICE_NAME ?? `meterline-${roleOf(process.argv)}`,
  });
  sdk.start();
  let stopped: Promise<void> | undefined;
  registerTracingShutdown(() => {
    stopped ??= sdk.shutdown();
    return stopped;
  });
}
