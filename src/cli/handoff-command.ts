/**
 * `meterline handoff verify <token>`: a seller's backend checks the hand-off token the onboarding page got
 * (signature, expiry) and spends it (its nonce in Redis), then reads the claims as JSON on stdout. A refusal
 * is one line on stderr with its reason code and exit 1. Needs the signing secret and Redis, no Kafka.
 */
import type { Command } from 'commander';
import { createRedis } from '../redis/client.ts';
import { Keys } from '../redis/keys.ts';
import { verifyHandoffOnce } from '../subscribe/handoff.ts';
import { loadConfigOrExit } from './lifecycle.ts';

export function registerHandoffCommand(program: Command): void {
  const handoff = program
    .command('handoff')
    .description('the signed hand-off token that registration adds to the onboarding redirect');
  handoff
    .command('verify <token>')
    .description(
      'verify a hand-off token once: prints its claims as JSON, or refuses it (forged, expired, reused) with exit 1',
    )
    .addHelpText(
      'after',
      `
Required: METERLINE_HANDOFF_SIGNING_SECRET (the registration service's), REDIS_URL and METERLINE_PLAN;
METERLINE_REDIS_PREFIX as the registration service's if it is not the default. A token verifies once.`,
    )
    .action(async (token: string) => {
      const config = loadConfigOrExit(['handoff']);
      const redis = createRedis(config.redis.url, config.redis);
      try {
        const claims = await verifyHandoffOnce(
          token,
          config.registration.handoffSecret as string,
          redis,
          new Keys(config.redis.prefix),
        );
        process.stdout.write(`${JSON.stringify(claims, null, 2)}\n`);
      } finally {
        redis.disconnect();
      }
    });
}
