/**
 * The MSK IAM token meterline signs in with: AWS's signer output has the form MSK checks (a SigV4-presigned
 * `kafka-cluster:Connect` GET on kafka.<region>.amazonaws.com, 15 minutes), its signature is the one the
 * secret key makes (recomputed here independently), and the provider shares one token until a minute before
 * it expires. Needs no service.
 */
import { generateAuthTokenFromCredentialsProvider } from 'aws-msk-iam-sasl-signer-js';
import { describe, expect, it } from 'vitest';
import { mskIamTokenProvider } from '../../../src/kafka/msk-iam.ts';
import { kafkaSecurityFromEnv } from '../../../src/kafka/security.ts';
import { decodeMskToken, verifyMskToken } from '../../support/sigv4-presign.ts';

const credentials = {
  accessKeyId: 'AKIDEXAMPLE',
  secretAccessKey: 'wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY',
};
const sign = ({ region }: { region: string }) =>
  generateAuthTokenFromCredentialsProvider({ region, awsCredentialsProvider: async () => credentials });

describe('the MSK IAM token', () => {
  it('is a presigned kafka-cluster:Connect request for the Region, signed with the secret key', async () => {
    const before = Date.now();
    const { token, expiryTime } = await sign({ region: 'eu-west-1' });
    expect(token).toMatch(/^[A-Za-z0-9_-]+$/); // base64url, no padding
    const t = decodeMskToken(token);
    expect(t.url.protocol).toBe('https:');
    expect(t.url.host).toBe('kafka.eu-west-1.amazonaws.com');
    expect(t.url.pathname).toBe('/');
    expect(t.url.searchParams.get('Action')).toBe('kafka-cluster:Connect');
    expect(t.url.searchParams.get('X-Amz-Algorithm')).toBe('AWS4-HMAC-SHA256');
    expect(t.url.searchParams.get('X-Amz-SignedHeaders')).toBe('host');
    expect(t.url.searchParams.get('User-Agent')).toMatch(/^aws-msk-iam-sasl-signer-js\//);
    expect(t).toMatchObject({
      accessKeyId: 'AKIDEXAMPLE',
      region: 'eu-west-1',
      service: 'kafka-cluster',
      expiresSeconds: 900,
    });
    expect(t.signature).toMatch(/^[0-9a-f]{64}$/);
    // 15 minutes from the signing second.
    expect(expiryTime).toBeGreaterThan(before - 1_000 + 899_000);
    expect(expiryTime).toBeLessThanOrEqual(Date.now() + 900_000);
    expect(verifyMskToken(token, credentials.secretAccessKey)).toBe(true);
    expect(verifyMskToken(token, `${credentials.secretAccessKey}x`)).toBe(false);
    // Tampering with a signed part breaks it too.
    const url = new URL(Buffer.from(token, 'base64url').toString('utf8'));
    url.searchParams.set('Action', 'kafka-cluster:AlterCluster');
    expect(
      verifyMskToken(Buffer.from(url.toString()).toString('base64url'), credentials.secretAccessKey),
    ).toBe(false);
  });

  it('is signed once and shared until a minute before it expires', async () => {
    let clock = 1_000_000;
    let signed = 0;
    const provide = mskIamTokenProvider({
      region: 'us-east-1',
      now: () => clock,
      sign: async () => ({ token: `t${++signed}`, expiryTime: clock + 900_000 }),
    });
    const first = await Promise.all([provide(), provide(), provide()]);
    expect(first.map((r) => r.value)).toEqual(['t1', 't1', 't1']);
    clock += 839_000;
    expect((await provide()).value).toBe('t1');
    clock += 1_000; // a minute before expiry
    expect((await provide()).value).toBe('t2');
  });
});

describe('KAFKA_SASL_MECHANISM=aws-msk-iam', () => {
  it('signs in with OAUTHBEARER over TLS, and needs the Region but no user name or password', async () => {
    const ok = kafkaSecurityFromEnv({ KAFKA_SASL_MECHANISM: 'aws-msk-iam', AWS_REGION: 'us-east-1' });
    expect(ok.issues).toEqual([]);
    expect(ok.security.ssl).toBe(true);
    expect(ok.security.sasl?.mechanism).toBe('oauthbearer');
    // A plaintext listener only when asked for in so many words.
    const plain = kafkaSecurityFromEnv({
      KAFKA_SASL_MECHANISM: 'aws-msk-iam',
      AWS_REGION: 'us-east-1',
      KAFKA_SSL: 'false',
    });
    expect(plain.security.ssl).toBeUndefined();
    const bad = kafkaSecurityFromEnv({
      KAFKA_SASL_MECHANISM: 'AWS-MSK-IAM',
      KAFKA_SASL_USERNAME: 'u',
      KAFKA_SASL_PASSWORD: 'p',
    });
    expect(bad.issues).toEqual([
      "KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD: not used with aws-msk-iam (the pod's IAM role signs in); remove them",
      "AWS_REGION: required with KAFKA_SASL_MECHANISM=aws-msk-iam (the MSK cluster's Region)",
    ]);
  });
});
