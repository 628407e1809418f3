/**
 * Wires the registration service from a validated config: Redis (the customer directory), the AWS client
 * for ResolveCustomer, SNS verification, the buyer-facing HTTP server and the ops endpoint.
 */
import { MarketplaceMeteringClient } from '@aws-sdk/client-marketplace-metering';
import type { Config } from '../config/config.ts';
import { MeterlineError } from '../errors.ts';
import type { Logger } from '../log.ts';
import { collectProcessMetrics } from '../observability/metrics.ts';
import { type OpsServer, startOpsServer } from '../observability/ops-server.ts';
import { createRedis } from '../redis/client.ts';
import { Keys } from '../redis/keys.ts';
import { CustomerDirectory } from './customer-directory.ts';
import {
  type RegistrationServer,
  type RegistrationServerOptions,
  startRegistrationServer,
} from './registration-server.ts';
import { resolveCustomer } from './resolve-customer.ts';
import { type SnsMessage, SnsVerifier } from './sns-message.ts';

export interface RunningRegistration {
  server: RegistrationServer;
  directory: CustomerDirectory;
  ops?: OpsServer;
  stop(): Promise<void>;
}

/** GETs a verified confirmation's SubscribeURL (the server checked it is an SNS endpoint). */
async function confirmSubscription(message: SnsMessage): Promise<void> {
  const url = message.SubscribeURL as string;
  const res = await fetch(url, { redirect: 'error', signal: AbortSignal.timeout(5_000) });
  if (!res.ok)
    throw new MeterlineError('aws_unavailable', `SNS answered ${res.status} to the confirmation`, {
      retriable: true,
    });
}

export async function startRegistration(
  config: Config,
  logger: Logger,
  /** Test seam: SNS verification with another trust root. */
  overrides: { sns?: RegistrationServerOptions['sns'] } = {},
): Promise<RunningRegistration> {
  const redis = createRedis(config.redis.url, config.redis);
  const directory = new CustomerDirectory(redis, new Keys(config.redis.prefix));
  const client = new MarketplaceMeteringClient({
    ...(config.worker.region ? { region: config.worker.region } : {}),
    ...(config.worker.endpoint ? { endpoint: config.worker.endpoint } : {}),
    // resolveCustomer retries on its own, briefly: the buyer is waiting.
    maxAttempts: 1,
    requestHandler: { requestTimeout: 5_000, throwOnRequestTimeout: true, connectionTimeout: 3_000 },
  });
  const verifier = new SnsVerifier({ topicArns: config.registration.snsTopicArns });
  let ops: OpsServer | undefined;
  let server: RegistrationServer | undefined;
  const stop = async () => {
    ops?.setReady(false);
    await server?.close();
    client.destroy();
    redis.disconnect();
    await ops?.close();
  };
  try {
    if (config.opsPort !== undefined) {
      collectProcessMetrics();
      ops = await startOpsServer(config.opsPort);
      logger.info({ port: ops.port }, 'metrics and health on /metrics, /healthz, /readyz');
    }
    server = await startRegistrationServer({
      port: config.registration.port,
      directory,
      resolve: (token) => resolveCustomer(client, token),
      productCodes: new Set(config.plan.products.map((p) => p.productCode)),
      redirectUrl: config.registration.redirectUrl,
      eventsApiKey: config.registration.eventsApiKey,
      sns: overrides.sns ?? { verify: (body) => verifier.verify(body), confirm: confirmSubscription },
      logger: logger.child({ stage: 'registration' }),
    });
  } catch (error) {
    await stop();
    throw error;
  }
  ops?.setReady(true);
  return { server, directory, ...(ops ? { ops } : {}), stop };
}
