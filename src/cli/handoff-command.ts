/**
 * `meterline handoff verify <token>`: a seller's backend checks the hand-off token the onboarding page got
 * (signature, expiry) and spends it (its nonce in Redis), then reads the claims as JSON on stdout. A refusal
 * is one line on stderr with its reason code and exit 1. Needs the signing secret and Redis, no Kafka.
 */
import type { Command } from 'commander';
import { Keys } from '../redis/keys.ts';
import { HandoffNonces } from '../state/handoff-nonces.ts';
import { verifyHandoff, verifyHandoffOnce } from '../subscribe/handoff.ts';
import { loadConfigOrExit } from './lifecycle.ts';
import { type TimeoutOptions, withRedis, withTimeout } from './one-shot.ts';
import { type OutputOptions, printData, renderTable, withExamples, withOutput } from './output.ts';

export function registerHandoffCommand(program: Command): void {
  const handoff = program
    .command('handoff')
    .description('the signed hand-off token that registration adds to the onboarding redirect');
  withExamples(handoff, ['meterline handoff verify "$HANDOFF_TOKEN"']);
  const verify = handoff
    .command('verify <token>')
    .description(
      'verify a hand-off token once: prints its claims as JSON, or refuses it (forged, expired, reused) with exit 1',
    )
    .addHelpText(
      'after',
      `
Required: METERLINE_HANDOFF_SIGNING_SECRET (the registration service's), REDIS_URL and METERLINE_PLAN;
METERLINE_REDIS_PREFIX as the registration service's if it is not the default. A token verifies once.
The claims print as JSON unless -o says otherwise.`,
    );
  // JSON by default: a seller's backend reads the claims.
  withExamples(withTimeout(withOutput(verify, 'json')), [
    'meterline handoff verify "$HANDOFF_TOKEN"',
    'meterline handoff verify "$HANDOFF_TOKEN" -o table',
  ]).action(async (token: string, o: OutputOptions & TimeoutOptions) => {
    const config = loadConfigOrExit(['handoff']);
    // A forged, malformed or expired token is refused before Redis is contacted.
    verifyHandoff(token, config.registration.handoffSecret as string);
    await withRedis(config, o, async (redis) => {
      const claims = await verifyHandoffOnce(
        token,
        config.registration.handoffSecret as string,
        new HandoffNonces(redis, new Keys(config.redis.prefix)),
      );
      printData(o, claims, () => `${renderTable(['claim', 'value'], Object.entries(claims))}\n`);
    });
  });
}
