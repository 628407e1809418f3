/**
 * `POST /marketplace/events`: subscription lifecycle events, from SNS (signature verified, each
 * MessageId applied once) or from an EventBridge API destination (shared key in `x-meterline-api-key`),
 * applied to the customer directory in event-time order, with the entitlements fetched again when an
 * event changes them. 5xx only when the failure is on our side, so the sender delivers again.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { isMeterlineError } from '../errors.ts';
import { metrics } from '../observability/metrics.ts';
import type { SubscriptionStatus } from '../state/customer-directory.ts';
import type { EntitlementSync } from './entitlements.ts';
import { sameSecret, text } from './http-answers.ts';
import {
  type EntitlementsChanged,
  type Parsed,
  parseEventBridge,
  parseSnsAction,
} from './lifecycle-events.ts';
import { API_KEY_HEADER, type RegistrationServerOptions } from './registration-server.ts';
import { type SnsMessage, subscribeUrlAllowed } from './sns-message.ts';

type Options = Pick<
  RegistrationServerOptions,
  'directory' | 'sns' | 'entitlements' | 'eventsApiKey' | 'logger'
>;

/** The handler of lifecycle events, for a registration server's options. */
export function lifecycleEndpoint(
  o: Options,
): (req: IncomingMessage, res: ServerResponse, body: string) => Promise<void> {
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

  return lifecycle;
}

function statusMessage(status: SubscriptionStatus, outcome: string): string {
  if (outcome === 'stale') return 'lifecycle event older than the customer state: ignored';
  // AWS gives about an hour after unsubscribe-pending for the last records; the open hour closes on its
  // usual schedule (grace), which is inside it with the default settings.
  if (status === 'unsubscribe-pending')
    return 'customer unsubscribing: its last hours are billed as they close';
  return `customer ${status}`;
}
