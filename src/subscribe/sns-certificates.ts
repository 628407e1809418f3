/**
 * The X.509 work of SNS verification: fetching a signing certificate (and an issuer it names), and the
 * checks on names and chains (sns-verifier.ts decides what to trust).
 */
import { X509Certificate } from 'node:crypto';
import { rootCertificates } from 'node:tls';

const FETCH_TIMEOUT_MS = 5_000;
/** Certificates kept, by URL; SNS signs with one certificate per region at a time. */
export const SNS_CERT_CACHE_SIZE = 16;
/** SNS rotates a region's certificate rarely: a handful of fresh URLs a minute is plenty. */
export const SNS_CERT_FETCHES_PER_MINUTE = 10;
/** Short enough that SNS's redelivery of a message after our outage finds the certificate. */
export const SNS_CERT_FAILURE_TTL_MS = 60_000;
/** URLs whose failure is remembered; past this the oldest are forgotten (they only cost a fetch again). */
export const MAX_REMEMBERED_FAILURES = 1024;
/** A PEM certificate is a few KB; anything far larger is not one. */
export const MAX_CERT_CHARS = 64 * 1024;

export async function defaultFetchBytes(url: string): Promise<Uint8Array> {
  const response = await fetch(url, { redirect: 'error', signal: AbortSignal.timeout(FETCH_TIMEOUT_MS) });
  if (!response.ok) throw new Error(`HTTP ${response.status} ${response.statusText}`.trim());
  return new Uint8Array(await response.arrayBuffer());
}

export async function defaultFetchText(url: string): Promise<string> {
  return Buffer.from(await defaultFetchBytes(url)).toString('utf8');
}

let parsedNodeRoots: readonly X509Certificate[] | undefined;
/** Node's trust store, parsed once for every verifier. */
export function nodeRoots(): readonly X509Certificate[] {
  parsedNodeRoots ??= parseRoots(rootCertificates);
  return parsedNodeRoots;
}

export function parseRoots(pems: readonly string[]): X509Certificate[] {
  return pems.map((pem) => new X509Certificate(pem));
}

/** Every certificate in a PEM text, in order (SNS serves the signing certificate first). */
export function splitPem(pem: string): string[] {
  return pem.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? [];
}

export function issuedBy(cert: X509Certificate, issuer: X509Certificate): boolean {
  try {
    return cert.checkIssued(issuer) && cert.verify(issuer.publicKey);
  } catch {
    return false;
  }
}

/** The CNs of a certificate's subject; Node escapes special characters, so one line is one attribute. */
export function commonNames(cert: X509Certificate): string[] {
  return cert.subject
    .split('\n')
    .filter((line) => line.startsWith('CN='))
    .map((line) => line.slice(3));
}

/** The certificate's "CA Issuers" URL, when it has exactly one. */
export function issuerUrl(cert: X509Certificate): string | undefined {
  const urls = (cert.infoAccess ?? '')
    .split('\n')
    .filter((line) => line.startsWith('CA Issuers - URI:'))
    .map((line) => line.slice('CA Issuers - URI:'.length));
  return urls.length === 1 ? urls[0] : undefined;
}
