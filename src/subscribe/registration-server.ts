import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { ConfigError, isMeterlineError, MeterlineError } from '../errors.ts';
import type { Logger } from '../log.ts';
import { metrics } from '../observability/metrics.ts';
import {
  type CustomerDirectory,
  type DirectoryEntry,
  defaultTenant,
  type ResolvedCustomer,
} from '../state/customer-directory.ts';
import type { EntitlementSync } from './entitlements.ts';
import { HANDOFF_QUERY_PARAM, signHandoff } from './handoff.ts';
import { HttpAnswer, json, page, readBody, SECURITY_HEADERS, sameSecret, text } from './http-answers.ts';
import { lifecycleEndpoint } from './lifecycle-endpoint.ts';
import type { LinkRequest, LinkResult } from './link-tenant.ts';
import type { SnsMessage } from './sns-message.ts';

export const TOKEN_FIELD = 'x-amzn-marketplace-token';
export const API_KEY_HEADER = 'x-meterline-api-key';

export interface RegistrationServerOptions {
  port: number;
  host?: string;
  directory: CustomerDirectory;
  resolve: (token: string) => Promise<ResolvedCustomer>;
  /** The plan's product codes: a token for any other product is refused. */
  productCodes: ReadonlySet<string>;
  /** Where the buyer goes after registering, with a signed hand-off token (`handoff_token`) in its query. */
  redirectUrl?: string | undefined;
  /** Signs the hand-off token; required with redirectUrl. */
  handoffSecret?: string | undefined;
  /** EventBridge API destinations send this key; without one, only SNS events are taken. */
  eventsApiKey?: string | undefined;
  /**
   * `POST /marketplace/link`: the seller's backend links its own tenant id with a hand-off token. Refused
   * (401) unless the call carries `apiKey` in the x-meterline-api-key header; absent, every call is refused.
   */
  link?: { apiKey: string | undefined; run(request: LinkRequest): Promise<LinkResult> };
  /**
   * Whether a registration POST may go on: 0, or the ms until the client may try again (answered 429).
   * Asked before the body is read, so a refused request costs one Redis call and nothing else.
   */
  admit?: (req: IncomingMessage) => Promise<number>;
  sns: {
    verify(body: string): Promise<SnsMessage>;
    /** Confirms an SNS subscription by fetching its SubscribeURL (verified, and on an SNS host). */
    confirm(message: SnsMessage): Promise<void>;
    /**
     * The Notifications already handled, by MessageId: one seen again (SNS redelivering after a lost
     * answer, or a captured copy posted again within the max age) is answered 200 and not applied again.
     * `remember` is called only after the message was handled, so a failed attempt is applied on retry.
     */
    handled?: {
      seen(messageId: string): Promise<boolean>;
      remember(messageId: string): Promise<void>;
    };
  };
  /**
   * Contract buyers' entitlements (GetEntitlements): fetched after a registration and on the events that
   * change them. Absent when no product of the plan bills a contract: `entitlement-updated` is then ignored.
   */
  entitlements?: Pick<EntitlementSync, 'refreshEntry' | 'refreshRef'>;
  logger: Logger;
  now?: () => number;
}

export interface RegistrationServer {
  port: number;
  close(): Promise<void>;
}

export async function startRegistrationServer(o: RegistrationServerOptions): Promise<RegistrationServer> {
  const now = o.now ?? Date.now;
  // Bare ids on the redirect could be typed by anyone: no redirect without a signed hand-off.
  if (o.redirectUrl && !o.handoffSecret) throw new Error('a redirect URL needs a hand-off signing secret');
  const lifecycle = lifecycleEndpoint(o);
  const server: Server = createServer((req, res) => {
    route(req, res).catch((error: unknown) => {
      o.logger.error({ err: error }, 'registration request failed');
      if (!res.headersSent) text(res, 500, 'internal error\n');
    });
  });

  async function route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = new URL(req.url ?? '/', 'http://registration').pathname;
    if (path !== '/marketplace/register' && path !== '/marketplace/events' && path !== '/marketplace/link') {
      return text(res, 404, 'not found\n');
    }
    if (req.method !== 'POST') {
      res.setHeader('allow', 'POST');
      return text(res, 405, 'this endpoint takes POST\n');
    }
    if (path === '/marketplace/register' && o.admit) {
      let waitMs: number;
      try {
        waitMs = await o.admit(req);
      } catch (error) {
        // Without Redis nothing could be stored either: the buyer is asked to come back.
        o.logger.error({ err: error }, 'registration rate limit unavailable');
        return page(res, 503, 'Please try again', ['Go back and submit the page again in a minute.']);
      }
      if (waitMs > 0) {
        metrics.registrations.inc({ outcome: 'rate_limited' });
        res.setHeader('retry-after', String(Math.ceil(waitMs / 1000)));
        return page(res, 429, 'Too many requests', [
          'Too many registrations were submitted from your network just now.',
          'Wait a minute, then submit the page again.',
        ]);
      }
    }
    let body: string;
    try {
      body = await readBody(req);
    } catch (error) {
      if (error instanceof HttpAnswer) return text(res, error.status, `${error.message}\n`);
      throw error;
    }
    if (path === '/marketplace/register') return register(req, res, body);
    if (path === '/marketplace/link') return link(req, res, body);
    return lifecycle(req, res, body);
  }

  async function register(req: IncomingMessage, res: ServerResponse, body: string): Promise<void> {
    const type = (req.headers['content-type'] ?? '').split(';')[0]?.trim().toLowerCase();
    const token =
      type === 'application/x-www-form-urlencoded' ? new URLSearchParams(body).get(TOKEN_FIELD) : null;
    if (!token) {
      metrics.registrations.inc({ outcome: 'no_token' });
      return page(res, 400, 'Registration link incomplete', [
        `This page expects the ${TOKEN_FIELD} form field that AWS Marketplace sends.`,
        'Open the product in AWS Marketplace and choose "Set up your account" again.',
      ]);
    }
    let customer: ResolvedCustomer;
    try {
      customer = await o.resolve(token);
      if (!o.productCodes.has(customer.productCode)) {
        throw new MeterlineError(
          'product_not_in_plan',
          `product ${customer.productCode} is not in the metering plan`,
          {
            context: { productCode: customer.productCode },
          },
        );
      }
    } catch (error) {
      if (!isMeterlineError(error)) throw error;
      metrics.registrations.inc({ outcome: error.code });
      o.logger.warn({ code: error.code, err: error }, 'registration refused');
      return registrationFailure(res, error);
    }
    const tenant = defaultTenant(customer);
    let entry: DirectoryEntry;
    try {
      entry = await o.directory.register(tenant, customer, now());
    } catch (error) {
      // Redis unreachable: the token stays valid for a while, so the buyer can submit again.
      metrics.registrations.inc({ outcome: 'redis_error' });
      o.logger.error({ err: error, tenant }, 'registration not stored');
      registrationFailure(
        res,
        new MeterlineError('redis_error', 'the customer directory is unavailable', { retriable: true }),
      );
      return;
    }
    if (entry.status !== 'subscribed' && entry.status !== 'unsubscribe-pending') {
      // The lifecycle ended or failed this subscription: a token, however valid, does not restart it.
      metrics.registrations.inc({ outcome: 'not_subscribed' });
      o.logger.warn(
        { tenant, productCode: customer.productCode, status: entry.status },
        'registration refused: the subscription is not active',
      );
      return page(res, 403, 'Subscription not active', [
        'AWS Marketplace reports that this subscription has ended or did not complete.',
        'If you have just subscribed again, wait a minute and submit this page again.',
      ]);
    }
    metrics.registrations.inc({ outcome: 'registered' });
    // In the background: the buyer is not kept waiting on AWS; a failure leaves it to the schedule.
    o.entitlements?.refreshEntry(entry, 'registration').catch(() => undefined);
    o.logger.info(
      {
        tenant,
        productCode: customer.productCode,
        licenseArn: customer.licenseArn,
        subscribedAt: entry.subscribedAt,
      },
      'customer registered',
    );
    if (o.redirectUrl && o.handoffSecret) {
      const next = new URL(o.redirectUrl);
      next.searchParams.set(
        HANDOFF_QUERY_PARAM,
        signHandoff(customer, entry.tenant, o.handoffSecret, { nowMs: now() }),
      );
      res.writeHead(303, { ...SECURITY_HEADERS, location: next.toString(), 'cache-control': 'no-store' });
      return void res.end();
    }
    return page(res, 200, 'Subscription registered', [
      `Your AWS account is registered for product ${customer.productCode}.`,
      `Your customer id is ${entry.tenant}.`,
    ]);
  }

  function registrationFailure(res: ServerResponse, error: MeterlineError): void {
    if (error.code === 'registration_token_expired' || error.code === 'registration_token_invalid') {
      page(res, 400, 'Registration link expired', [
        'This registration link is no longer valid.',
        'Open the product in AWS Marketplace and choose "Set up your account" again.',
      ]);
      return;
    }
    if (error.code === 'product_not_in_plan') {
      page(res, 400, 'Unknown product', ['This registration is for a product this service does not meter.']);
      return;
    }
    // Throttling or an AWS outage: the token is still good for a while, so the buyer can retry.
    page(res, 503, 'Please try again', [
      'We could not confirm your subscription with AWS just now.',
      'Go back and submit the page again in a minute.',
    ]);
  }

  /**
   * The seller's backend links its tenant id: `{"token": <hand-off token>, "tenant": <its id>}` with the
   * link API key. Answers JSON: 200 with the link, or 4xx `{error, message}` (nothing of the input echoed).
   */
  async function link(req: IncomingMessage, res: ServerResponse, body: string): Promise<void> {
    const key = req.headers[API_KEY_HEADER];
    const apiKey = o.link?.apiKey;
    if (!o.link || !apiKey || typeof key !== 'string' || !sameSecret(key, apiKey)) {
      metrics.tenantLinks.inc({ outcome: 'unauthorized' });
      return json(res, 401, {
        error: 'unauthorized',
        message: `a link needs the ${API_KEY_HEADER} header with the configured link key`,
      });
    }
    let request: { token?: unknown; tenant?: unknown };
    try {
      request = JSON.parse(body) as { token?: unknown; tenant?: unknown };
    } catch {
      request = {};
    }
    if (typeof request !== 'object' || request === null || typeof request.token !== 'string') {
      metrics.tenantLinks.inc({ outcome: 'invalid_request' });
      return json(res, 400, {
        error: 'invalid_request',
        message: 'the body must be JSON: {"token": "<hand-off token>", "tenant": "<your tenant id>"}',
      });
    }
    try {
      const linked = await o.link.run({ token: request.token, tenant: request.tenant });
      metrics.tenantLinks.inc({ outcome: linked.changed ? 'linked' : 'already_linked' });
      o.logger.info(
        { tenant: linked.tenant, previousTenant: linked.previousTenant, productCode: linked.productCode },
        'tenant linked to its AWS identity',
      );
      return json(res, 200, linked);
    } catch (error) {
      if (!isMeterlineError(error)) throw error;
      metrics.tenantLinks.inc({ outcome: error.code });
      o.logger.warn({ code: error.code, err: error }, 'tenant link refused');
      return json(res, LINK_STATUS.get(error.code) ?? 500, { error: error.code, message: error.message });
    }
  }

  // A public endpoint: a client that trickles its headers or body is cut off, not waited for.
  server.headersTimeout = 10_000;
  server.requestTimeout = 30_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', (error: NodeJS.ErrnoException) =>
      reject(
        error.code === 'EADDRINUSE'
          ? new ConfigError('METERLINE_REGISTRATION_LISTEN_PORT', [
              `port ${o.port} is in use on this host: set METERLINE_REGISTRATION_LISTEN_PORT to a free port`,
            ])
          : error,
      ),
    );
    server.listen(o.port, o.host ?? '0.0.0.0', () => resolve());
  });
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise((resolve) => {
        server.close(() => resolve());
        server.closeIdleConnections();
      }),
  };
}

/** The HTTP status of each refused link. */
const LINK_STATUS = new Map<string, number>([
  ['tenant_invalid', 400],
  ['handoff_token_invalid', 403],
  ['handoff_token_expired', 403],
  ['handoff_token_reused', 409],
  ['tenant_taken', 409],
  ['subscription_not_found', 404],
  ['redis_error', 503],
]);
