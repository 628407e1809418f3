/**
 * An independent check of an MSK IAM token: base64url of a SigV4-presigned `kafka-cluster:Connect` URL.
 * Recomputes the signature from the secret key by the SigV4 rules, with node:crypto only, so a token the
 * signer got wrong (or a wrong secret) is refused here as MSK would refuse it. The broker-side validator
 * (test/support/msk-iam/MskIamValidator.java) applies the same rules.
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';

export interface PresignedToken {
  url: URL;
  accessKeyId: string;
  date: string;
  region: string;
  service: string;
  amzDate: string;
  expiresSeconds: number;
  signature: string;
}

/** RFC 3986 encoding, as SigV4 wants it (encodeURIComponent leaves !'()* alone). */
const encode = (s: string) =>
  encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);

export function decodeMskToken(token: string): PresignedToken {
  const url = new URL(Buffer.from(token, 'base64url').toString('utf8'));
  const q = url.searchParams;
  const [accessKeyId = '', date = '', region = '', service = '', terminator] = (
    q.get('X-Amz-Credential') ?? ''
  ).split('/');
  if (terminator !== 'aws4_request') throw new Error('X-Amz-Credential is not a SigV4 credential scope');
  return {
    url,
    accessKeyId,
    date,
    region,
    service,
    amzDate: q.get('X-Amz-Date') ?? '',
    expiresSeconds: Number(q.get('X-Amz-Expires')),
    signature: q.get('X-Amz-Signature') ?? '',
  };
}

/** True when the token's signature is the one `secretAccessKey` makes. `User-Agent` is added after signing. */
export function verifyMskToken(token: string, secretAccessKey: string): boolean {
  const t = decodeMskToken(token);
  const signed = [...t.url.searchParams]
    .filter(([k]) => k !== 'X-Amz-Signature' && k !== 'User-Agent')
    .map(([k, v]) => [encode(k), encode(v)] as const)
    .sort(([a, x], [b, y]) => (a < b ? -1 : a > b ? 1 : x < y ? -1 : x > y ? 1 : 0))
    .map(([k, v]) => `${k}=${v}`)
    .join('&');
  const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');
  const canonical = ['GET', '/', signed, `host:${t.url.host}`, '', 'host', sha256('')].join('\n');
  const scope = `${t.date}/${t.region}/${t.service}/aws4_request`;
  const toSign = ['AWS4-HMAC-SHA256', t.amzDate, scope, sha256(canonical)].join('\n');
  const hmac = (key: string | Buffer, data: string) => createHmac('sha256', key).update(data).digest();
  let key = hmac(`AWS4${secretAccessKey}`, t.date);
  for (const part of [t.region, t.service, 'aws4_request']) key = hmac(key, part);
  const expected = createHmac('sha256', key).update(toSign).digest();
  const given = Buffer.from(t.signature, 'hex');
  return given.length === expected.length && timingSafeEqual(given, expected);
}
