/**
 * The buyer-facing HTTP side of a SaaS listing:
 * - `POST /marketplace/register`: the registration URL. AWS Marketplace sends the buyer's browser here
 *   with the form field `x-amzn-marketplace-token`; ResolveCustomer turns it into the buyer's AWS identity,
 *   which is stored in the customer directory under a tenant id. The buyer is then sent on to the seller's
 *   onboarding page (or shown a confirmation).
 * - `POST /marketplace/events`: subscription lifecycle events, from SNS (signature verified) or from an
 *   EventBridge API destination (shared key in `x-meterline-api-key`).
 * Every answer says what went wrong in a fixed text, never echoing what was sent, and carries nosniff and a
 * CSP that allows nothing, errors included.
 */
import { timingSafeEqual } from 'node:crypto';
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
  type SubscriptionStatus,
} from '../state/customer-directory.ts';
import type { EntitlementSync } from './entitlements.ts';
import { HANDOFF_QUERY_PARAM, signHandoff } from './handoff.ts';
import {
  type EntitlementsChanged,
  type Parsed,
  parseEventBridge,
  parseSnsAction,
} from './lifecycle-events.ts';
import type { LinkRequest, LinkResult } from './link-tenant.ts';
import { type SnsMessage, subscribeUrlAllowed } from './sns-message.ts';

/** A registration form or an event is small; anything larger is refused before it is read. */
const MAX_BODY_BYTES = 64 * 1024;
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

class HttpAnswer extends Error {
  readonly status: number;
  constructor(status: number, message: string) {
    super(message);
    this.status = status;
  }
}

export async function startRegistrationServer(o: RegistrationServerOptions): Promise<RegistrationServer> {
  const now = o.now ?? Date.now;
  // Bare ids on the redirect could be typed by anyone: no redirect without a signed hand-off.
  if (o.redirectUrl && !o.handoffSecret) throw new Error('a redirect URL needs a hand-off signing secret');
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

  async function lifecycle(req: IncomingMessage, res: ServerResponse, body: string): Promise<void> {
    const snsType = req.headers['x-amz-sns-message-type'];
    if (snsType !== undefined) return snsEvent(res, body);
    const key = req.headers[API_KEY_HEADER];
    if (!o.eventsApiKey || typeof key !== 'string' || !sameSecret(key, o.eventsApiKey)) {
      metrics.lifecycleEvents.inc({ source: 'eventbridge', status: 'none', outcome: 'unauthorized' });
      return text(
        res,
        401,
        `an EventBridge event needs the ${API_KEY_HEADER} header with the configured key\n`,
      );
    }
    let event: unknown;
    try {
      event = JSON.parse(body);
    } catch {
      metrics.lifecycleEvents.inc({ source: 'eventbridge', status: 'none', outcome: 'invalid' });
      return text(res, 400, 'the event is not JSON\n');
    }
    return applyChange(res, 'eventbridge', parseEventBridge(event));
  }

  async function snsEvent(res: ServerResponse, body: string): Promise<void> {
    let message: SnsMessage;
    try {
      message = await o.sns.verify(body);
    } catch (error) {
      if (!isMeterlineError(error)) throw error;
      metrics.lifecycleEvents.inc({ source: 'sns', status: 'none', outcome: error.code });
      o.logger.warn({ code: error.code, reason: error.message }, 'SNS message refused');
      // 5xx makes SNS redeliver: only when the failure was on our side (the certificate fetch).
      // Fixed texts: the error's message quotes the sender's fields (clipped, but theirs).
      if (error.retriable)
        return text(res, 503, 'the signing certificate could not be fetched; deliver again\n');
      if (error.code === 'sns_signature_invalid') {
        return text(res, 403, 'not accepted: signature, certificate or topic\n');
      }
      return text(res, 400, 'not a valid SNS message\n');
    }
    if (message.Type === 'SubscriptionConfirmation') {
      // Only an SNS endpoint is ever fetched, whatever a (signed) message names.
      if (!subscribeUrlAllowed(message.SubscribeURL ?? '')) {
        metrics.lifecycleEvents.inc({ source: 'sns', status: 'none', outcome: 'sns_signature_invalid' });
        o.logger.warn(
          { topicArn: message.TopicArn },
          'SNS confirmation refused: SubscribeURL is not an SNS endpoint',
        );
        return text(res, 403, 'SubscribeURL is not an SNS endpoint\n');
      }
      await o.sns.confirm(message);
      o.logger.info({ topicArn: message.TopicArn }, 'SNS subscription confirmed');
      return text(res, 200, 'subscription confirmed\n');
    }
    if (message.Type !== 'Notification') return text(res, 200, 'ignored\n');
    const parsed = parseSnsAction(message.Message, message.Timestamp);
    const handled = o.sns.handled;
    if (handled && (await handled.seen(message.MessageId))) {
      const status = 'status' in parsed ? parsed.status : 'none';
      metrics.lifecycleEvents.inc({ source: 'sns', status, outcome: 'replayed' });
      o.logger.info(
        { messageId: message.MessageId, topicArn: message.TopicArn, status },
        'SNS message already handled: answered, not applied again',
      );
      return text(res, 200, 'replayed\n');
    }
    return applyChange(res, 'sns', parsed, async () => {
      try {
        await handled?.remember(message.MessageId);
      } catch (error) {
        // Handled already: a redelivery would only be applied once more, which changes nothing.
        o.logger.warn({ err: error, messageId: message.MessageId }, 'SNS message id not remembered');
      }
    });
  }

  async function applyChange(
    res: ServerResponse,
    source: string,
    parsed: Parsed,
    /** Called once the event was handled (applied, stale, ignored or for an unknown customer). */
    done?: () => Promise<void>,
  ): Promise<void> {
    if ('invalid' in parsed) {
      metrics.lifecycleEvents.inc({ source, status: 'none', outcome: 'invalid' });
      o.logger.warn({ source, reason: parsed.invalid }, 'lifecycle event unreadable');
      return text(res, 400, 'the lifecycle event could not be read\n');
    }
    if ('entitlementsChanged' in parsed) return entitlementsChanged(res, source, parsed, done);
    if ('ignored' in parsed) {
      metrics.lifecycleEvents.inc({ source, status: 'none', outcome: 'ignored' });
      o.logger.info({ source, event: parsed.ignored }, 'lifecycle event ignored');
      await done?.();
      return text(res, 200, 'ignored\n');
    }
    const { outcome, tenant } = await o.directory.applyStatus(parsed.ref, parsed.status, parsed.eventMs);
    if (parsed.refreshEntitlements && o.entitlements && outcome !== 'unknown_customer') {
      try {
        await o.entitlements.refreshRef(parsed.ref);
      } catch {
        // The status is applied; answered 503 so the sender delivers again and the fetch is retried then.
        metrics.lifecycleEvents.inc({ source, status: parsed.status, outcome: 'entitlements_unavailable' });
        return text(res, 503, 'entitlements could not be fetched; deliver again\n');
      }
    }
    await done?.();
    metrics.lifecycleEvents.inc({ source, status: parsed.status, outcome });
    const log = { source, event: parsed.name, status: parsed.status, tenant, outcome, ref: parsed.ref };
    if (outcome === 'unknown_customer')
      o.logger.warn(log, 'lifecycle event for a customer that never registered');
    else o.logger.info(log, statusMessage(parsed.status, outcome));
    // 200 even for an unknown customer: a redelivery would not find it either.
    return text(res, 200, `${outcome}\n`);
  }

  /** `entitlement-updated`: the buyer's entitlements are fetched again before the event is acknowledged. */
  async function entitlementsChanged(
    res: ServerResponse,
    source: string,
    parsed: EntitlementsChanged,
    done: (() => Promise<void>) | undefined,
  ): Promise<void> {
    if (!o.entitlements) {
      metrics.lifecycleEvents.inc({ source, status: 'none', outcome: 'ignored' });
      o.logger.info({ source, event: parsed.name }, 'lifecycle event ignored: no product bills a contract');
      await done?.();
      return text(res, 200, 'ignored\n');
    }
    let outcome: Awaited<ReturnType<EntitlementSync['refreshRef']>>;
    try {
      outcome = await o.entitlements.refreshRef(parsed.entitlementsChanged);
    } catch {
      // Not remembered as handled: SNS delivers it again, and the fetch is retried then. What was stored
      // before stays in force meanwhile.
      metrics.lifecycleEvents.inc({ source, status: 'none', outcome: 'entitlements_unavailable' });
      return text(res, 503, 'entitlements could not be fetched; deliver again\n');
    }
    await done?.();
    const answer =
      outcome === 'refreshed' ? 'entitlements_refreshed' : outcome === 'not_contract' ? 'ignored' : outcome;
    metrics.lifecycleEvents.inc({ source, status: 'none', outcome: answer });
    const log = { source, event: parsed.name, ref: parsed.entitlementsChanged, outcome: answer };
    if (outcome === 'unknown_customer')
      o.logger.warn(log, 'entitlement event for a customer that never registered');
    else o.logger.info(log, 'entitlement event handled');
    return text(res, 200, `${answer}\n`);
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

function statusMessage(status: SubscriptionStatus, outcome: string): string {
  if (outcome === 'stale') return 'lifecycle event older than the customer state: ignored';
  // AWS gives about an hour after unsubscribe-pending for the last records; the open hour closes on its
  // usual schedule (grace), which is inside it with the default settings.
  if (status === 'unsubscribe-pending')
    return 'customer unsubscribing: its last hours are billed as they close';
  return `customer ${status}`;
}

function sameSecret(given: string, expected: string): boolean {
  const a = Buffer.from(given);
  const b = Buffer.from(expected);
  return a.length === b.length && timingSafeEqual(a, b);
}

async function readBody(req: IncomingMessage): Promise<string> {
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > MAX_BODY_BYTES) throw new HttpAnswer(413, `the body must be under ${MAX_BODY_BYTES} bytes`);
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > MAX_BODY_BYTES) throw new HttpAnswer(413, `the body must be under ${MAX_BODY_BYTES} bytes`);
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/** On every answer: no content sniffing, nothing loaded, framed or submitted from our pages. */
const SECURITY_HEADERS = {
  'x-content-type-options': 'nosniff',
  'content-security-policy':
    "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  'referrer-policy': 'no-referrer',
} as const;

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

function json(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, {
    ...SECURITY_HEADERS,
    'content-type': 'application/json',
    'cache-control': 'no-store',
  });
  res.end(`${JSON.stringify(body)}\n`);
}

function text(res: ServerResponse, status: number, body: string): void {
  res.writeHead(status, {
    ...SECURITY_HEADERS,
    'content-type': 'text/plain; charset=utf-8',
    'cache-control': 'no-store',
  });
  res.end(body);
}

function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function page(res: ServerResponse, status: number, title: string, lines: string[]): void {
  res.writeHead(status, {
    ...SECURITY_HEADERS,
    'content-type': 'text/html; charset=utf-8',
    'cache-control': 'no-store',
  });
  res.end(
    `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>${escapeHtml(title)}</title></head>` +
      `<body><h1>${escapeHtml(title)}</h1>${lines.map((l) => `<p>${escapeHtml(l)}</p>`).join('')}</body></html>\n`,
  );
}
