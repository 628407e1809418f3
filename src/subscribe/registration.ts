/**
 * Wires the registration service from a validated config: Redis (the customer directory), the AWS clients
 * for ResolveCustomer and GetEntitlements (with its scheduled refresh), SNS verification, the buyer-facing
 * HTTP server and the ops endpoint.
 */
import { MarketplaceEntitlementServiceClient } from '@aws-sdk/client-marketplace-entitlement-service';
import { MarketplaceMeteringClient } from '@aws-sdk/client-marketplace-metering';
import type { Config } from '../config/config.ts';
import { MeterlineError } from '../errors.ts';
import type { Logger } from '../log.ts';
import { reportBuildInfo } from '../observability/build-info.ts';
import { collectProcessMetrics } from '../observability/metrics.ts';
import { type OpsServer, startOpsServer } from '../observability/ops-server.ts';
import { createRedis } from '../redis/client.ts';
import { Keys } from '../redis/keys.ts';
import { CustomerDirectory, indexFileTenants } from '../state/customer-directory.ts';
import { EntitlementStore, redisRoundClaim } from '../state/entitlement-store.ts';
import { HandledMessages } from '../state/handled-messages.ts';
import { HandoffNonces } from '../state/handoff-nonces.ts';
import { SharedRateLimiter } from '../state/rate-limiter.ts';
import { EntitlementSync } from './entitlements.ts';
import { linkTenant } from './link-tenant.ts';
import { cachedResolve, clientAddress, RegistrationLimiter } from './registration-limits.ts';
import { type RegistrationServer, startRegistrationServer } from './registration-server.ts';
import { resolveCustomer } from './resolve-customer.ts';
import { marketplaceTopicArns, type SnsMessage } from './sns-message.ts';
import { SNS_MAX_AGE_MS, SNS_MAX_FUTURE_SKEW_MS, SnsVerifier } from './sns-verifier.ts';

export interface RunningRegistration {
  server: RegistrationServer;
  directory: CustomerDirectory;
  /** Contract buyers' entitlements from GetEntitlements (inactive when no product bills a contract). */
  entitlements: EntitlementSync;
  ops?: OpsServer;
  stop(): Promise<void>;
}

/** One outbound GET: the body, or a throw for anything but a 2xx answer. */
export type HttpGet = (url: string) => Promise<Uint8Array>;

async function httpGet(url: string): Promise<Uint8Array> {
  const res = await fetch(url, { redirect: 'error', signal: AbortSignal.timeout(5_000) });
  if (!res.ok) throw new Error(`HTTP ${res.status}`);
  return new Uint8Array(await res.arrayBuffer());
}

/** GETs a verified confirmation's SubscribeURL (the server checked it is an SNS endpoint). */
async function confirmSubscription(get: HttpGet, message: SnsMessage): Promise<void> {
  try {
    await get(message.SubscribeURL as string);
  } catch (error) {
    throw new MeterlineError('aws_unavailable', 'SNS did not accept the subscription confirmation', {
      retriable: true,
      cause: error,
    });
  }
}

/**
 * The topics whose SNS messages are taken: METERLINE_SNS_TOPIC_ARNS when set ('*' = any), otherwise AWS
 * Marketplace's own topics for the plan's products. Never open by default.
 */
export function snsTopics(config: Config): readonly string[] | '*' {
  const configured = config.registration.snsTopicArns;
  if (configured === '*') return '*';
  if (configured.length > 0) return configured;
  return marketplaceTopicArns(config.plan.products.map((p) => p.productCode));
}

export async function startRegistration(
  config: Config,
  logger: Logger,
  /**
   * Test seams, which no configuration key reaches: trusted roots for SNS certificates (a test CA), and the
   * one function every outbound GET goes through (certificates, issuers, subscription confirmations).
   */
  overrides: { sns?: { roots?: readonly string[]; get?: HttpGet } } = {},
): Promise<RunningRegistration> {
  const redis = createRedis(config.redis.url, config.redis);
  const keys = new Keys(config.redis.prefix);
  const directory = new CustomerDirectory(redis, keys);
  const limiter = new RegistrationLimiter(redis, keys, {
    perAddress: config.registration.ratePerAddress,
    total: config.registration.rateTotal,
  });
  const client = new MarketplaceMeteringClient({
    ...(config.worker.region ? { region: config.worker.region } : {}),
    ...(config.worker.endpoint ? { endpoint: config.worker.endpoint } : {}),
    // resolveCustomer retries on its own, briefly: the buyer is waiting.
    maxAttempts: 1,
    requestHandler: { requestTimeout: 5_000, throwOnRequestTimeout: true, connectionTimeout: 3_000 },
  });
  // The Entitlement Service answers in US East (N. Virginia) only, whatever Region the seller meters in.
  const entitlementClient = new MarketplaceEntitlementServiceClient({
    region: 'us-east-1',
    ...(config.entitlements.endpoint ? { endpoint: config.entitlements.endpoint } : {}),
    // Our own retry (the project's backoff, paced by the shared quota) owns the attempts.
    maxAttempts: 1,
    requestHandler: {
      requestTimeout: config.worker.requestTimeoutMs,
      throwOnRequestTimeout: true,
      connectionTimeout: 3_000,
    },
  });
  const entitlements = new EntitlementSync({
    client: entitlementClient,
    store: new EntitlementStore(redis, keys),
    directory,
    plan: config.plan,
    customers: config.customerMap,
    logger: logger.child({ stage: 'entitlements' }),
    rateLimiter: new SharedRateLimiter(redis, keys, 'GetEntitlements', { rate: config.worker.rateLimit }),
    claimRound: redisRoundClaim(redis, keys),
  });
  const get = overrides.sns?.get ?? httpGet;
  const topicArns = snsTopics(config);
  if (topicArns === '*') {
    logger.warn(
      'METERLINE_SNS_TOPIC_ARNS=*: SNS messages from any topic are taken; anyone can create a topic, subscribe this endpoint and publish lifecycle events for any buyer',
    );
  } else logger.info({ topicArns }, 'SNS messages are taken from these topics only');
  const verifier = new SnsVerifier({
    topicArns,
    fetchText: async (url) => Buffer.from(await get(url)).toString('utf8'),
    fetchBytes: get,
    ...(overrides.sns?.roots ? { roots: overrides.sns.roots } : {}),
  });
  let ops: OpsServer | undefined;
  let server: RegistrationServer | undefined;
  const stop = async () => {
    ops?.setReady(false);
    await server?.close();
    await entitlements.stop();
    client.destroy();
    entitlementClient.destroy();
    redis.disconnect();
    await ops?.close();
  };
  try {
    if (config.opsPort !== undefined) {
      collectProcessMetrics();
      reportBuildInfo(['registration']);
      ops = await startOpsServer(config.opsPort);
      logger.info({ port: ops.port }, 'metrics and health on /metrics, /healthz, /readyz');
    }
    // A directory of the earlier form (one entry per tenant) moves to one entry per product, once.
    const moved = await directory.migrate();
    if (moved > 0) logger.info({ entries: moved }, 'customer directory migrated to one entry per product');
    // Lifecycle events find the customers file's tenants too (the processor indexes them as well).
    await indexFileTenants(directory, config);
    server = await startRegistrationServer({
      port: config.registration.port,
      directory,
      resolve: cachedResolve(redis, keys, (token) => resolveCustomer(client, token)),
      admit: (req) => limiter.admit(clientAddress(req, config.registration.trustedProxyHops)),
      productCodes: new Set(config.plan.products.map((p) => p.productCode)),
      redirectUrl: config.registration.redirectUrl,
      handoffSecret: config.registration.handoffSecret,
      eventsApiKey: config.registration.eventsApiKey,
      link: {
        apiKey: config.registration.linkApiKey,
        run: (request) =>
          linkTenant(request, {
            directory,
            customerMap: config.customerMap,
            secret: config.registration.handoffSecret as string,
            nonces: new HandoffNonces(redis, keys),
          }),
      },
      sns: {
        verify: (body) => verifier.verify(body),
        confirm: (message) => confirmSubscription(get, message),
        // Kept while a copy could still pass the age check: its Timestamp may be up to the skew ahead.
        handled: new HandledMessages(redis, keys, SNS_MAX_AGE_MS + SNS_MAX_FUTURE_SKEW_MS),
      },
      ...(entitlements.active ? { entitlements } : {}),
      logger: logger.child({ stage: 'registration' }),
    });
    entitlements.start(config.entitlements.refreshIntervalMs);
  } catch (error) {
    await stop();
    throw error;
  }
  ops?.setReady(true);
  return { server, directory, entitlements, ...(ops ? { ops } : {}), stop };
}
