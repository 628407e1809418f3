/**
 * Verification of Amazon SNS HTTP(S) messages, as AWS documents it ("Verifying the signatures of Amazon SNS
 * messages"). AWS Marketplace announces SaaS subscription changes (subscribe-success, unsubscribe-pending, …)
 * through SNS, which POSTs a JSON envelope to our endpoint. An endpoint that trusts the body lets anyone
 * unsubscribe a customer, so every message goes through `SnsVerifier.verify` before anything reads it.
 *
 * The checks, in order; nothing is fetched before the message has passed the cheap ones:
 * 1. the body is a JSON object with every field its Type needs (`sns_message_invalid`);
 * 2. its Timestamp is no older than `maxAgeMs` and at most 5 minutes ahead: a captured message cannot be
 *    replayed later (`sns_message_invalid`);
 * 3. SigningCertURL matches `certUrlPattern` (by default only AWS's own SNS hosts over https), and TopicArn is
 *    in `topicArns` when that list is given (`sns_signature_invalid`);
 * 4. the certificate is fetched (once per URL, cached; a failed fetch is `sns_cert_unavailable`, retriable, and
 *    not cached), must hold an RSA key and be valid now (`sns_signature_invalid`);
 * 5. the signature (RSA-SHA1 for SignatureVersion 1, RSA-SHA256 for 2) must verify over the canonical string
 *    (`sns_signature_invalid`).
 *
 * A SubscriptionConfirmation is confirmed by GETting its SubscribeURL; check it with `subscribeUrlAllowed`
 * first, so no message can make us GET an arbitrary URL.
 */
import { createVerify, X509Certificate } from 'node:crypto';
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

/** An SNS endpoint host: `sns.<region>.amazonaws.com`, or `.amazonaws.com.cn` in the China regions. */
export const SNS_HOST_PATTERN = /^sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?$/;

/** A signing certificate URL: an SNS host over https, a `.pem` path, no port, user, query or fragment. */
export const SNS_CERT_URL_PATTERN = /^https:\/\/sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?\/[^?#]*\.pem$/;

export interface SnsVerifierOptions {
  /**
   * The SigningCertURL a message may name, checked before anything is fetched.
   * @defaultValue {@link SNS_CERT_URL_PATTERN}
   */
  certUrlPattern?: RegExp;
  /** When given and not empty, a message from any other topic is refused. */
  topicArns?: readonly string[];
  /**
   * Fetches a certificate's PEM text; throws when it cannot.
   * @defaultValue global fetch, 5 s timeout, no redirects, a 2xx answer required
   */
  fetchText?: (url: string) => Promise<string>;
  /** @defaultValue Date.now */
  now?: () => number;
  /**
   * A message whose Timestamp is older than this is refused (replay protection).
   * @defaultValue 3_600_000 (1 hour)
   */
  maxAgeMs?: number;
}

/** How far ahead of our clock a Timestamp may be (clock skew). */
export const SNS_MAX_FUTURE_SKEW_MS = 5 * 60_000;
/** Certificates kept, by URL; SNS signs with one certificate per region at a time. */
export const SNS_CERT_CACHE_SIZE = 16;
const FETCH_TIMEOUT_MS = 5_000;
/** A PEM certificate is a few KB; anything far larger is not one. */
const MAX_CERT_CHARS = 64 * 1024;

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
function clip(value: string, max = 200): string {
  return value.length <= max ? value : `${value.slice(0, max)}…(${value.length} chars)`;
}

/** A copy without the g/y flags, whose `lastIndex` would make `test` answer differently on each call. */
function statelessPattern(pattern: RegExp): RegExp {
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

async function defaultFetchText(url: string): Promise<string> {
  const response = await fetch(url, { redirect: 'error', signal: AbortSignal.timeout(FETCH_TIMEOUT_MS) });
  if (!response.ok) throw new Error(`HTTP ${response.status} ${response.statusText}`.trim());
  return response.text();
}

function invalid(message: string, context: Record<string, unknown> = {}): MeterlineError {
  return new MeterlineError('sns_message_invalid', message, { context });
}

function badSignature(message: string, context: Record<string, unknown>, cause?: unknown): MeterlineError {
  return new MeterlineError('sns_signature_invalid', message, { context, cause });
}

/** Parses the body into an SnsMessage, listing every missing or mistyped field at once. */
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

export class SnsVerifier {
  readonly #certUrlPattern: RegExp;
  readonly #topicArns: ReadonlySet<string> | undefined;
  readonly #fetchText: (url: string) => Promise<string>;
  readonly #now: () => number;
  readonly #maxAgeMs: number;
  /** By URL, oldest first; holds the fetch in flight too, so a burst of messages fetches a certificate once. */
  readonly #certs = new Map<string, Promise<X509Certificate>>();

  constructor(options: SnsVerifierOptions = {}) {
    const maxAgeMs = options.maxAgeMs ?? 60 * 60_000;
    if (!(maxAgeMs > 0)) throw new RangeError('maxAgeMs must be greater than 0');
    if (options.topicArns?.some((arn) => typeof arn !== 'string' || arn === '')) {
      throw new RangeError('topicArns must be non-empty strings');
    }
    this.#certUrlPattern = statelessPattern(options.certUrlPattern ?? SNS_CERT_URL_PATTERN);
    this.#topicArns = options.topicArns?.length ? new Set(options.topicArns) : undefined;
    this.#fetchText = options.fetchText ?? defaultFetchText;
    this.#now = options.now ?? Date.now;
    this.#maxAgeMs = maxAgeMs;
  }

  /** The verified message; throws MeterlineError (`sns_*`) for anything not provably sent by SNS just now. */
  async verify(body: string): Promise<SnsMessage> {
    const message = parseSnsMessage(body);
    const context = { messageId: message.MessageId, topicArn: message.TopicArn, type: message.Type };
    const what = `SNS ${message.Type} ${clip(message.MessageId, 80)}`;

    const now = this.#now();
    const sentAt = Date.parse(message.Timestamp);
    if (Number.isNaN(sentAt)) {
      throw invalid(`${what}: Timestamp "${clip(message.Timestamp, 40)}" is not a time`, context);
    }
    if (sentAt < now - this.#maxAgeMs) {
      throw invalid(
        `${what}: Timestamp ${message.Timestamp} is older than ${this.#maxAgeMs} ms (a replay, or delivered too late)`,
        context,
      );
    }
    if (sentAt > now + SNS_MAX_FUTURE_SKEW_MS) {
      throw invalid(
        `${what}: Timestamp ${message.Timestamp} is more than ${SNS_MAX_FUTURE_SKEW_MS} ms in the future`,
        context,
      );
    }

    if (!this.#certUrlPattern.test(message.SigningCertURL)) {
      throw badSignature(
        `${what}: SigningCertURL "${clip(message.SigningCertURL)}" is not an allowed SNS certificate URL`,
        context,
      );
    }
    if (this.#topicArns && !this.#topicArns.has(message.TopicArn)) {
      throw badSignature(`${what}: topic ${clip(message.TopicArn)} is not one we subscribed to`, context);
    }

    let cert: X509Certificate;
    try {
      cert = await this.#certificate(message.SigningCertURL);
    } catch (error) {
      if (!(error instanceof MeterlineError)) throw error;
      // The fetch may be shared with other messages: name this one.
      throw new MeterlineError(error.code, `${what}: ${error.message}`, {
        retriable: error.retriable,
        cause: error.cause,
        context: { ...context, ...error.context },
      });
    }
    const validFrom = Date.parse(cert.validFrom);
    const validTo = Date.parse(cert.validTo);
    if (!(validFrom <= now && now <= validTo)) {
      throw badSignature(
        `${what}: signing certificate is not valid now (valid from ${cert.validFrom} to ${cert.validTo})`,
        context,
      );
    }
    if (cert.publicKey.asymmetricKeyType !== 'rsa') {
      throw badSignature(
        `${what}: signing certificate holds a ${cert.publicKey.asymmetricKeyType} key, not RSA`,
        context,
      );
    }

    const verifier = createVerify(message.SignatureVersion === '1' ? 'RSA-SHA1' : 'RSA-SHA256');
    verifier.update(snsStringToSign(message), 'utf8');
    let matches: boolean;
    try {
      matches = verifier.verify(cert.publicKey, message.Signature, 'base64');
    } catch (error) {
      throw badSignature(
        `${what}: signature could not be checked: ${(error as Error).message}`,
        context,
        error,
      );
    }
    if (!matches) {
      throw badSignature(
        `${what}: signature (version ${message.SignatureVersion}) does not match the message and certificate`,
        context,
      );
    }
    return message;
  }

  #certificate(url: string): Promise<X509Certificate> {
    const cached = this.#certs.get(url);
    if (cached) {
      // Most recently used last, so eviction drops the certificate unused the longest.
      this.#certs.delete(url);
      this.#certs.set(url, cached);
      return cached;
    }
    const loading = this.#load(url);
    this.#certs.set(url, loading);
    // A failure is not kept: the next message asks again.
    loading.catch(() => {
      if (this.#certs.get(url) === loading) this.#certs.delete(url);
    });
    while (this.#certs.size > SNS_CERT_CACHE_SIZE) {
      const oldest = this.#certs.keys().next().value as string;
      this.#certs.delete(oldest);
    }
    return loading;
  }

  async #load(url: string): Promise<X509Certificate> {
    const context = { certUrl: url };
    let pem: string;
    try {
      pem = await this.#fetchText(url);
    } catch (error) {
      throw new MeterlineError(
        'sns_cert_unavailable',
        `signing certificate ${clip(url)} could not be fetched: ${(error as Error)?.message ?? String(error)}`,
        { retriable: true, cause: error, context },
      );
    }
    if (typeof pem !== 'string' || pem.length > MAX_CERT_CHARS) {
      throw badSignature(`signing certificate ${clip(url)} is not a PEM certificate`, context);
    }
    try {
      return new X509Certificate(pem);
    } catch (error) {
      throw badSignature(
        `signing certificate ${clip(url)} is not a PEM certificate: ${(error as Error).message}`,
        context,
        error,
      );
    }
  }
}
