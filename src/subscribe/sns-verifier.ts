/**
 * Verification of Amazon SNS HTTP(S) messages, as AWS documents it ("Verifying the signatures of Amazon SNS
 * messages", https://docs.aws.amazon.com/sns/latest/dg/sns-verify-signature-of-message.html: check the topic,
 * that the certificate is issued to SNS and that its chain of trust is valid). AWS Marketplace announces SaaS
 * subscription changes (subscribe-success, unsubscribe-pending, …) through SNS, which POSTs a JSON envelope to
 * our endpoint. An endpoint that trusts the body lets anyone unsubscribe a customer, so every message goes
 * through `SnsVerifier.verify` before anything reads it.
 *
 * The checks, in order; nothing is fetched before the message has passed the cheap ones:
 * 1. the body is a JSON object with every field its Type needs (`sns_message_invalid`);
 * 2. its Timestamp is no older than `maxAgeMs` and at most 5 minutes ahead: a captured message cannot be
 *    replayed later (`sns_message_invalid`); within that time the registration server remembers each
 *    MessageId it handled, and answers one seen again without applying it;
 * 3. SigningCertURL matches `certUrlPattern` (by default an SNS regional host over https, never an S3 virtual
 *    host such as `sns.s3.amazonaws.com`), and TopicArn is one of `topicArns` (`sns_signature_invalid`). There
 *    is no open default: a caller names the topics, or passes `'*'` on purpose;
 * 4. the certificate is fetched (once per URL; a failed fetch is `sns_cert_unavailable`, retriable), must name SNS
 *    as its subject (CN=sns.amazonaws.com), chain to a trusted root (Node's store) and be valid now
 *    (`sns_signature_invalid`). Any path of the right shape can be named, so fetches are capped per minute
 *    (over the cap: `sns_cert_unavailable`, and SNS delivers again), a failure is remembered for
 *    `certFailureTtlMs`, and a certificate that has verified a signature is kept apart, where neither
 *    failures nor fresh fetches can push it out;
 * 5. the signature (RSA-SHA1 for SignatureVersion 1, RSA-SHA256 for 2) must verify over the canonical string
 *    (`sns_signature_invalid`).
 *
 * A SubscriptionConfirmation is confirmed by GETting its SubscribeURL; check it with `subscribeUrlAllowed`
 * first, so no message can make us GET an arbitrary URL.
 */
import { createVerify, X509Certificate } from 'node:crypto';
import { MeterlineError } from '../errors.ts';
import {
  commonNames,
  defaultFetchBytes,
  defaultFetchText,
  issuedBy,
  issuerUrl,
  MAX_CERT_CHARS,
  MAX_REMEMBERED_FAILURES,
  nodeRoots,
  parseRoots,
  SNS_CERT_CACHE_SIZE,
  SNS_CERT_FAILURE_TTL_MS,
  SNS_CERT_FETCHES_PER_MINUTE,
  splitPem,
} from './sns-certificates.ts';
import {
  badSignature,
  clip,
  ISSUER_HOST_PATTERN,
  invalid,
  parseSnsMessage,
  SNS_CERT_SUBJECTS,
  SNS_CERT_URL_PATTERN,
  type SnsMessage,
  snsStringToSign,
  statelessPattern,
} from './sns-message.ts';

export interface SnsVerifierOptions {
  /**
   * The topics whose messages are taken; any other is refused before anything is fetched. `'*'` takes every
   * topic (the signature is still checked). Required: there is no open default.
   */
  topicArns: readonly string[] | '*';
  /**
   * The SigningCertURL a message may name, checked before anything is fetched.
   * @defaultValue {@link SNS_CERT_URL_PATTERN}
   */
  certUrlPattern?: RegExp;
  /**
   * Fetches a certificate's PEM text; throws when it cannot.
   * @defaultValue global fetch, 5 s timeout, no redirects, a 2xx answer required
   */
  fetchText?: (url: string) => Promise<string>;
  /**
   * Fetches an issuer certificate (DER or PEM) named by a certificate's Authority Information Access.
   * @defaultValue global fetch, as fetchText
   */
  fetchBytes?: (url: string) => Promise<Uint8Array>;
  /**
   * Trusted roots (PEM). A test seam: no configuration key sets it, so production always uses Node's store.
   * @defaultValue `tls.rootCertificates`
   */
  roots?: readonly string[];
  /** @defaultValue Date.now */
  now?: () => number;
  /**
   * A message whose Timestamp is older than this is refused (replay protection).
   * @defaultValue 3_600_000 (1 hour)
   */
  maxAgeMs?: number;
  /**
   * Certificate fetches (of URLs not cached) per minute, for this verifier.
   * @defaultValue {@link SNS_CERT_FETCHES_PER_MINUTE}
   */
  certFetchesPerMinute?: number;
  /**
   * How long a URL whose certificate could not be fetched or was refused is answered from memory.
   * @defaultValue {@link SNS_CERT_FAILURE_TTL_MS}
   */
  certFailureTtlMs?: number;
}

/** A message whose Timestamp is older than this is refused, unless the verifier is given another maxAgeMs. */
export const SNS_MAX_AGE_MS = 60 * 60_000;
/** How far ahead of our clock a Timestamp may be (clock skew). */
export const SNS_MAX_FUTURE_SKEW_MS = 5 * 60_000;

export class SnsVerifier {
  readonly #certUrlPattern: RegExp;
  readonly #topicArns: ReadonlySet<string> | '*';
  readonly #fetchText: (url: string) => Promise<string>;
  readonly #fetchBytes: (url: string) => Promise<Uint8Array>;
  readonly #roots: readonly X509Certificate[];
  readonly #now: () => number;
  readonly #maxAgeMs: number;
  /** Certificates that verified a message's signature, by URL, unused the longest first. */
  readonly #verified = new Map<string, X509Certificate>();
  /** Fetched and chain-checked, no signature verified yet: evictable by other fetches, never `#verified`. */
  readonly #candidates = new Map<string, X509Certificate>();
  /** Fetches in flight, so a burst of messages fetches a certificate once. */
  readonly #loading = new Map<string, Promise<X509Certificate>>();
  /** URLs that failed, with the error to answer until `until`. */
  readonly #failures = new Map<string, { until: number; error: MeterlineError }>();
  /** Start times of the fetches in the last minute. */
  #fetchTimes: number[] = [];
  readonly #fetchesPerMinute: number;
  readonly #failureTtlMs: number;
  /** Issuers fetched through Authority Information Access, by URL (a handful exist). */
  readonly #issuers = new Map<string, X509Certificate>();

  constructor(options: SnsVerifierOptions) {
    const maxAgeMs = options.maxAgeMs ?? SNS_MAX_AGE_MS;
    if (!(maxAgeMs > 0)) throw new RangeError('maxAgeMs must be greater than 0');
    const topics = options.topicArns;
    if (topics !== '*') {
      // An empty list would be read as "any topic" by someone: say which topics, or '*'.
      if (!Array.isArray(topics) || topics.length === 0) {
        throw new RangeError("topicArns must name at least one topic, or be '*' for any topic");
      }
      if (topics.some((arn) => typeof arn !== 'string' || arn === '' || arn === '*')) {
        throw new RangeError('topicArns must be non-empty strings');
      }
    }
    this.#certUrlPattern = statelessPattern(options.certUrlPattern ?? SNS_CERT_URL_PATTERN);
    this.#topicArns = topics === '*' ? '*' : new Set(topics);
    this.#fetchText = options.fetchText ?? defaultFetchText;
    this.#fetchBytes = options.fetchBytes ?? defaultFetchBytes;
    this.#roots = options.roots ? parseRoots(options.roots) : nodeRoots();
    this.#now = options.now ?? Date.now;
    this.#maxAgeMs = maxAgeMs;
    this.#fetchesPerMinute = options.certFetchesPerMinute ?? SNS_CERT_FETCHES_PER_MINUTE;
    this.#failureTtlMs = options.certFailureTtlMs ?? SNS_CERT_FAILURE_TTL_MS;
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
    if (this.#topicArns !== '*' && !this.#topicArns.has(message.TopicArn)) {
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
    this.#keepVerified(message.SigningCertURL, cert);
    return message;
  }

  #keepVerified(url: string, cert: X509Certificate): void {
    this.#candidates.delete(url);
    // Most recently used last, so eviction drops the certificate unused the longest.
    this.#verified.delete(url);
    this.#verified.set(url, cert);
    while (this.#verified.size > SNS_CERT_CACHE_SIZE) {
      this.#verified.delete(this.#verified.keys().next().value as string);
    }
  }

  async #certificate(url: string): Promise<X509Certificate> {
    const known = this.#verified.get(url) ?? this.#candidates.get(url);
    if (known) return known;
    const now = this.#now();
    const failed = this.#failures.get(url);
    if (failed && failed.until > now) throw failed.error;
    if (failed) this.#failures.delete(url);
    const inFlight = this.#loading.get(url);
    if (inFlight) return inFlight;
    this.#fetchTimes = this.#fetchTimes.filter((t) => t > now - 60_000);
    if (this.#fetchTimes.length >= this.#fetchesPerMinute) {
      // Not remembered as a failure: the URL was never tried.
      throw new MeterlineError(
        'sns_cert_unavailable',
        `signing certificate ${clip(url)} not fetched: ${this.#fetchesPerMinute} fetches in the last minute`,
        { retriable: true, context: { certUrl: url } },
      );
    }
    this.#fetchTimes.push(now);
    const loading = this.#load(url);
    this.#loading.set(url, loading);
    try {
      const cert = await loading;
      this.#candidates.set(url, cert);
      while (this.#candidates.size > SNS_CERT_CACHE_SIZE) {
        this.#candidates.delete(this.#candidates.keys().next().value as string);
      }
      return cert;
    } catch (error) {
      if (error instanceof MeterlineError) {
        this.#failures.set(url, { until: this.#now() + this.#failureTtlMs, error });
        while (this.#failures.size > MAX_REMEMBERED_FAILURES) {
          this.#failures.delete(this.#failures.keys().next().value as string);
        }
      }
      throw error;
    } finally {
      this.#loading.delete(url);
    }
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
    let certs: X509Certificate[];
    try {
      const blocks = splitPem(pem);
      certs = (blocks.length > 0 ? blocks : [pem]).map((block) => new X509Certificate(block));
    } catch (error) {
      throw badSignature(
        `signing certificate ${clip(url)} is not a PEM certificate: ${(error as Error).message}`,
        context,
        error,
      );
    }
    const [leaf, ...bundled] = certs as [X509Certificate, ...X509Certificate[]];
    const names = commonNames(leaf);
    // Exactly one CN, and SNS's: a certificate a public CA issued to anyone else proves nothing about SNS.
    if (names.length !== 1 || !SNS_CERT_SUBJECTS.includes(names[0] as string)) {
      throw badSignature(
        `signing certificate ${clip(url)} is not issued to SNS (subject CN ${clip(names.join(', ') || 'none', 80)})`,
        context,
      );
    }
    if (!(await this.#chainsToRoot(leaf, bundled, context))) {
      throw badSignature(`signing certificate ${clip(url)} does not chain to a trusted root`, context);
    }
    return leaf;
  }

  /** Whether `leaf` chains to a trusted root through valid CA certificates (bundled, or fetched by AIA). */
  async #chainsToRoot(
    leaf: X509Certificate,
    bundled: readonly X509Certificate[],
    context: Record<string, unknown>,
  ): Promise<boolean> {
    const now = this.#now();
    const usableCa = (c: X509Certificate) =>
      c.ca && Date.parse(c.validFrom) <= now && now <= Date.parse(c.validTo);
    let cert = leaf;
    // Leaf, at most two intermediates, root: AWS's chains are shorter.
    for (let depth = 0; depth < 3; depth++) {
      if (this.#roots.some((root) => issuedBy(cert, root))) return true;
      let next = bundled.find((c) => c !== cert && usableCa(c) && issuedBy(cert, c));
      if (!next) {
        const fetched = await this.#issuerOf(cert, context);
        if (fetched && usableCa(fetched) && issuedBy(cert, fetched)) next = fetched;
      }
      if (!next) return false;
      cert = next;
    }
    return false;
  }

  /** The issuer named by `cert`'s Authority Information Access, from Amazon Trust Services' hosts only. */
  async #issuerOf(
    cert: X509Certificate,
    context: Record<string, unknown>,
  ): Promise<X509Certificate | undefined> {
    const url = issuerUrl(cert);
    if (url === undefined) return undefined;
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      return undefined;
    }
    const allowed =
      (parsed.protocol === 'http:' || parsed.protocol === 'https:') &&
      parsed.port === '' &&
      parsed.username === '' &&
      parsed.password === '' &&
      ISSUER_HOST_PATTERN.test(parsed.hostname);
    if (!allowed) return undefined;
    const cached = this.#issuers.get(url);
    if (cached) return cached;
    let bytes: Uint8Array;
    try {
      bytes = await this.#fetchBytes(url);
    } catch (error) {
      throw new MeterlineError(
        'sns_cert_unavailable',
        `issuer certificate ${clip(url)} could not be fetched: ${(error as Error)?.message ?? String(error)}`,
        { retriable: true, cause: error, context: { ...context, issuerUrl: url } },
      );
    }
    if (bytes.length > MAX_CERT_CHARS) return undefined;
    let issuer: X509Certificate;
    try {
      issuer = new X509Certificate(Buffer.from(bytes));
    } catch {
      return undefined;
    }
    if (this.#issuers.size >= 8) this.#issuers.delete(this.#issuers.keys().next().value as string);
    this.#issuers.set(url, issuer);
    return issuer;
  }
}
