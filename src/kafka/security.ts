/**
 * Kafka connection security from the environment: TLS (optionally with a private CA) and SASL
 * PLAIN / SCRAM. Read in one place, so every client (pipeline, CLI tools) connects the same way; the
 * config check lists every mistake in these keys at start-up.
 */
import { readFileSync } from 'node:fs';
import type { ConnectionOptions } from 'node:tls';
import type { SASLOptions } from 'kafkajs';

export const SASL_MECHANISMS = ['plain', 'scram-sha-256', 'scram-sha-512'] as const;

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
  if (flag === 'true' || caFile) {
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
  const mechanism = env.KAFKA_SASL_MECHANISM?.toLowerCase();
  if (mechanism) {
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
