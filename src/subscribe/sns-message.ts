/**
 * Amazon SNS HTTP(S) messages: their shape, parsing with every field checked, the string SNS signs, and
 * which SubscribeURL may be confirmed. AWS Marketplace announces SaaS subscription changes through SNS;
 * every message goes through `SnsVerifier.verify` (sns-verifier.ts) before anything reads it.
 */
import { MeterlineError } from '../errors.ts';

export type SnsMessageType = 'Notification' | 'SubscriptionConfirmation' | 'UnsubscribeConfirmation';

/** The parsed, verified envelope; only the fields SNS documents, whatever else the body held. */
export type SnsMessage = {
  Type: SnsMessageType;
  MessageId: string;
  TopicArn: string;
  Message: string;
  /** ISO 8601, UTC, as SNS sent it. */
  Timestamp: string;
  SignatureVersion: '1' | '2';
  Signature: string;
  SigningCertURL: string;
  /** Confirmations only. */
  SubscribeURL?: string;
  /** Confirmations only. */
  Token?: string;
  /** Notifications, when the publisher set one. */
  Subject?: string;
  /** Notifications. */
  UnsubscribeURL?: string;
};

/**
 * An SNS regional endpoint host: `sns.<region>.amazonaws.com` (GovCloud regions too: `us-gov-west-1`), or
 * `.amazonaws.com.cn` in the China regions. The region part has the shape of a region name, so an S3 virtual
 * host (`sns.s3.amazonaws.com`, `sns.s3-website.…`: a bucket called "sns") never matches.
 */
export const SNS_HOST_PATTERN = /^sns\.[a-z]{2}(-gov)?-[a-z]+-\d{1,2}\.amazonaws\.com(\.cn)?$/;

/**
 * A signing certificate URL: an SNS host over https, no port, user, query or fragment, and the path AWS uses
 * (`/SimpleNotificationService-<32 characters>.pem`, the form the sns-payload-validator package checks daily
 * against live SNS).
 */
export const SNS_CERT_URL_PATTERN =
  /^https:\/\/sns\.[a-z]{2}(-gov)?-[a-z]+-\d{1,2}\.amazonaws\.com(\.cn)?\/SimpleNotificationService-[A-Za-z0-9]{32}\.pem$/;

/** The subject (CN) of SNS's signing certificates. */
export const SNS_CERT_SUBJECTS: readonly string[] = ['sns.amazonaws.com', 'sns.amazonaws.com.cn'];

/**
 * Where an SNS certificate's issuer may be fetched from when the PEM does not carry it (its Authority
 * Information Access URL): Amazon Trust Services' certificate hosts only. What is fetched there adds no trust:
 * it must itself chain to a trusted root.
 */
export const ISSUER_HOST_PATTERN = /^crt\.[a-z0-9-]+\.amazontrust\.com$/;

/**
 * AWS Marketplace's account, which owns every product's SNS topics (in us-east-1). AWS's own SaaS integration
 * sample subscribes to exactly these ARNs: https://github.com/aws-samples/aws-marketplace-serverless-saas-integration/blob/6454403d225dddf63cf95cd629633afadd15aaba/template.yaml
 * (AWS's seller guide shows only a placeholder account and says the ARN is given at product creation, hence
 * METERLINE_SNS_TOPIC_ARNS to replace this default.)
 */
export const MARKETPLACE_SNS_ACCOUNT = '287250355862';

/** The topics AWS Marketplace announces a product's subscription and entitlement changes on. */
export function marketplaceTopicArns(productCodes: Iterable<string>): string[] {
  return [...productCodes].flatMap((code) => [
    `arn:aws:sns:us-east-1:${MARKETPLACE_SNS_ACCOUNT}:aws-mp-subscription-notification-${code}`,
    `arn:aws:sns:us-east-1:${MARKETPLACE_SNS_ACCOUNT}:aws-mp-entitlement-notification-${code}`,
  ]);
}

const MESSAGE_TYPES: readonly string[] = [
  'Notification',
  'SubscriptionConfirmation',
  'UnsubscribeConfirmation',
];

/** Fields every message must have, as strings. */
const COMMON_FIELDS = [
  'Type',
  'MessageId',
  'TopicArn',
  'Message',
  'Timestamp',
  'SignatureVersion',
  'Signature',
  'SigningCertURL',
] as const;
const CONFIRMATION_FIELDS = ['SubscribeURL', 'Token'] as const;
const OPTIONAL_NOTIFICATION_FIELDS = ['Subject', 'UnsubscribeURL'] as const;

/** The keys signed, in AWS's order; Subject only when present. */
const NOTIFICATION_SIGNED = ['Message', 'MessageId', 'Subject', 'Timestamp', 'TopicArn', 'Type'] as const;
const CONFIRMATION_SIGNED = [
  'Message',
  'MessageId',
  'SubscribeURL',
  'Timestamp',
  'Token',
  'TopicArn',
  'Type',
] as const;

const ISO_TIMESTAMP = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$/;
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/** An attacker-supplied value, shortened for an error message or a log. */
export function clip(value: string, max = 200): string {
  return value.length <= max ? value : `${value.slice(0, max)}…(${value.length} chars)`;
}

/** A copy without the g/y flags, whose `lastIndex` would make `test` answer differently on each call. */
export function statelessPattern(pattern: RegExp): RegExp {
  return pattern.global || pattern.sticky
    ? new RegExp(pattern.source, pattern.flags.replace(/[gy]/g, ''))
    : pattern;
}

/**
 * Whether a SubscribeURL may be GET to confirm a subscription: https, the default port, no user info, and a host
 * matching `hostPattern` (whole host name; by default an SNS endpoint, so `sns.us-east-1.amazonaws.com.evil.example`
 * is refused).
 */
export function subscribeUrlAllowed(url: string, hostPattern: RegExp = SNS_HOST_PATTERN): boolean {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return false;
  }
  return (
    parsed.protocol === 'https:' &&
    parsed.port === '' &&
    parsed.username === '' &&
    parsed.password === '' &&
    statelessPattern(hostPattern).test(parsed.hostname)
  );
}

/** The string SNS signed: each signed key present in the message, as `key\nvalue\n`, in AWS's order. */
export function snsStringToSign(message: SnsMessage): string {
  const keys = message.Type === 'Notification' ? NOTIFICATION_SIGNED : CONFIRMATION_SIGNED;
  let out = '';
  for (const key of keys) {
    const value = message[key];
    if (value === undefined) continue;
    out += `${key}\n${value}\n`;
  }
  return out;
}

export function invalid(message: string, context: Record<string, unknown> = {}): MeterlineError {
  return new MeterlineError('sns_message_invalid', message, { context });
}

export function badSignature(
  message: string,
  context: Record<string, unknown>,
  cause?: unknown,
): MeterlineError {
  return new MeterlineError('sns_signature_invalid', message, { context, cause });
}

export function parseSnsMessage(body: string): SnsMessage {
  let raw: unknown;
  try {
    raw = JSON.parse(body);
  } catch (error) {
    // V8's message quotes the input; say where it broke instead.
    const position = /at position (\d+)/.exec((error as Error).message)?.[1];
    const where = position === undefined ? '' : `, broken at position ${position}`;
    throw new MeterlineError(
      'sns_message_invalid',
      `SNS message is not JSON (${body.length} chars${where})`,
      {
        cause: error,
      },
    );
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    const got = raw === null ? 'null' : Array.isArray(raw) ? 'an array' : typeof raw;
    throw invalid(`SNS message must be a JSON object, got ${got}`);
  }
  const fields = raw as Record<string, unknown>;
  const field = (key: string): unknown => (Object.hasOwn(fields, key) ? fields[key] : undefined);

  const type = field('Type');
  if (typeof type === 'string' && !MESSAGE_TYPES.includes(type)) {
    throw invalid(`SNS message has an unknown Type "${clip(type, 60)}"`);
  }
  const confirmation = type === 'SubscriptionConfirmation' || type === 'UnsubscribeConfirmation';
  const required: readonly string[] = confirmation
    ? [...COMMON_FIELDS, ...CONFIRMATION_FIELDS]
    : COMMON_FIELDS;
  const issues: string[] = [];
  for (const key of required) {
    const value = field(key);
    if (value === undefined || value === null) issues.push(`${key} is missing`);
    else if (typeof value !== 'string') issues.push(`${key} must be a string, got ${typeof value}`);
    else if (value === '' && key !== 'Message') issues.push(`${key} is empty`);
  }
  if (type === 'Notification') {
    for (const key of OPTIONAL_NOTIFICATION_FIELDS) {
      const value = field(key);
      if (value !== undefined && value !== null && typeof value !== 'string') {
        issues.push(`${key} must be a string, got ${typeof value}`);
      }
    }
  }
  const version = field('SignatureVersion');
  if (typeof version === 'string' && version !== '' && version !== '1' && version !== '2') {
    issues.push(`SignatureVersion must be "1" or "2", got "${clip(version, 20)}"`);
  }
  const timestamp = field('Timestamp');
  if (typeof timestamp === 'string' && timestamp !== '' && !ISO_TIMESTAMP.test(timestamp)) {
    issues.push(`Timestamp "${clip(timestamp, 40)}" is not an ISO 8601 time with a zone`);
  }
  const signature = field('Signature');
  if (typeof signature === 'string' && signature !== '' && !BASE64.test(signature)) {
    issues.push('Signature is not base64');
  }
  const messageId = typeof field('MessageId') === 'string' ? (field('MessageId') as string) : undefined;
  if (issues.length > 0) {
    const what = typeof type === 'string' ? `SNS ${type}` : 'SNS message';
    throw invalid(`${what}${messageId ? ` ${clip(messageId, 80)}` : ''} is invalid: ${issues.join('; ')}`, {
      messageId,
      issues,
    });
  }

  const str = (key: string): string => field(key) as string;
  const optional = (key: string): { [key: string]: string } => {
    const value = field(key);
    return typeof value === 'string' ? { [key]: value } : {};
  };
  return {
    Type: type as SnsMessageType,
    MessageId: str('MessageId'),
    TopicArn: str('TopicArn'),
    Message: str('Message'),
    Timestamp: str('Timestamp'),
    SignatureVersion: str('SignatureVersion') as '1' | '2',
    Signature: str('Signature'),
    SigningCertURL: str('SigningCertURL'),
    ...(type === 'Notification'
      ? { ...optional('Subject'), ...optional('UnsubscribeURL') }
      : { SubscribeURL: str('SubscribeURL'), Token: str('Token') }),
  };
}
