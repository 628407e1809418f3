/**
 * Kafka connection security from the environment: TLS (optionally with a private CA), SASL PLAIN / SCRAM,
 * and Amazon MSK's IAM access control (`aws-msk-iam`: OAUTHBEARER with AWS's signer, see msk-iam.ts). Read
 * in one place, so every client (pipeline, CLI tools) connects the same way; the
 * config check lists every mistake in these keys at start-up.
 */
import { readFileSync } from 'node:fs';
import type { ConnectionOptions } from 'node:tls';
import type { SASLOptions } from 'kafkajs';
import { mskIamTokenProvider } from './msk-iam.ts';

export const SASL_MECHANISMS = ['plain', 'scram-sha-256', 'scram-sha-512', 'aws-msk-iam'] as const;

export interface KafkaSecurity {
  ssl?: boolean | ConnectionOptions;
  sasl?: SASLOptions;
}

/** Builds the kafkajs `ssl`/`sasl` options; returns the problems instead when the keys are wrong. */
export function kafkaSecurityFromEnv(env: NodeJS.ProcessEnv): { security: KafkaSecurity; issues: string[] } {
  const issues: string[] = [];
  const security: KafkaSecurity = {};
  const flag = env.KAFKA_SSL ?? '';
  if (flag !== '' && flag !== 'true' && flag !== 'false') issues.push('KAFKA_SSL: must be true or false');
  const caFile = env.KAFKA_SSL_CA_FILE;
  const verify = env.KAFKA_SSL_REJECT_UNAUTHORIZED ?? 'true';
  if (verify !== 'true' && verify !== 'false')
    issues.push('KAFKA_SSL_REJECT_UNAUTHORIZED: must be true or false');
  const mechanism = env.KAFKA_SASL_MECHANISM?.toLowerCase();
  // MSK serves IAM only over TLS (port 9098): on unless KAFKA_SSL=false says otherwise (a local test broker).
  const msk = mechanism === 'aws-msk-iam';
  if (flag === 'true' || caFile || (msk && flag !== 'false')) {
    const tls: ConnectionOptions = { rejectUnauthorized: verify !== 'false' };
    if (caFile) {
      try {
        tls.ca = [readFileSync(caFile, 'utf8')];
      } catch (error) {
        issues.push(`KAFKA_SSL_CA_FILE: cannot read ${caFile} (${(error as NodeJS.ErrnoException).code})`);
      }
    }
    security.ssl = caFile || verify === 'false' ? tls : true;
  }
  if (msk) {
    if (env.KAFKA_SASL_USERNAME || env.KAFKA_SASL_PASSWORD)
      issues.push(
        "KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD: not used with aws-msk-iam (the pod's IAM role signs in); remove them",
      );
    const region = env.AWS_REGION;
    if (!region)
      issues.push("AWS_REGION: required with KAFKA_SASL_MECHANISM=aws-msk-iam (the MSK cluster's Region)");
    else security.sasl = { mechanism: 'oauthbearer', oauthBearerProvider: mskIamTokenProvider({ region }) };
  } else if (mechanism) {
    const username = env.KAFKA_SASL_USERNAME;
    const password = env.KAFKA_SASL_PASSWORD;
    if (!(SASL_MECHANISMS as readonly string[]).includes(mechanism))
      issues.push(`KAFKA_SASL_MECHANISM: must be one of ${SASL_MECHANISMS.join(', ')}`);
    if (!username) issues.push('KAFKA_SASL_USERNAME: required with KAFKA_SASL_MECHANISM');
    if (!password) issues.push('KAFKA_SASL_PASSWORD: required with KAFKA_SASL_MECHANISM');
    if (username && password && (SASL_MECHANISMS as readonly string[]).includes(mechanism)) {
      security.sasl = { mechanism, username, password } as SASLOptions;
    }
  } else if (env.KAFKA_SASL_USERNAME || env.KAFKA_SASL_PASSWORD) {
    issues.push('KAFKA_SASL_MECHANISM: required when KAFKA_SASL_USERNAME or KAFKA_SASL_PASSWORD is set');
  }
  return { security, issues };
}
