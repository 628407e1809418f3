/**
 * Services for the whole run. Kafka and Redis come through testcontainers when a container engine answers
 * (test/support/containers.ts; METERLINE_TESTCONTAINERS=off forces the local stack); the schema registry,
 * Jaeger and the Metering emulator, and Kafka and Redis with no engine, come from the local stack
 * (deploy/stack/), started or reused. Endpoints already in the environment always win.
 */
export default async function setup(): Promise<(() => Promise<void>) | undefined> {
  // Pure unit runs (npm run test:unit) need no services.
  if (process.env.METERLINE_NO_STACK === '1') return undefined;
  const log = (line: string) => process.stderr.write(`[global-setup] ${line}\n`);
  const { containersMode, engineReachable, startContainers } = await import('./containers.ts');
  const mode = containersMode();
  const wanted = mode !== 'off' && !process.env.KAFKA_BROKERS && !process.env.REDIS_URL;
  let containers: Awaited<ReturnType<typeof startContainers>> | undefined;
  if (wanted && (mode === 'on' || (await engineReachable()))) {
    containers = await startContainers(log);
    log(containers.summary);
    Object.assign(process.env, containers.env);
  } else {
    log(
      mode === 'off'
        ? 'METERLINE_TESTCONTAINERS=off: Kafka and Redis from the local stack'
        : wanted
          ? 'no container engine answers: Kafka and Redis from the local stack'
          : 'KAFKA_BROKERS or REDIS_URL is set: using the environment and the local stack',
    );
  }
  const { ensureStack, stopStack } = await import('../../deploy/stack/index.ts');
  let env: Awaited<ReturnType<typeof ensureStack>>;
  try {
    // With the containers' endpoints in the environment, the stack only checks them and starts the rest.
    env = await ensureStack();
  } catch (err) {
    await containers?.stop();
    throw err;
  }
  for (const [k, v] of Object.entries(env)) if (typeof v === 'string') process.env[k] = v;
  // The emulator ignores signatures, but the SDK needs credentials to sign with.
  process.env.AWS_ACCESS_KEY_ID ??= 'test';
  process.env.AWS_SECRET_ACCESS_KEY ??= 'test';
  return async () => {
    await containers?.stop();
    // Stop only what this run started; services the developer (or another run) had up stay up.
    if (env.started.length && process.env.METERLINE_KEEP_STACK !== '1') {
      await stopStack({ only: env.started as import('../../deploy/stack/index.ts').ServiceName[] });
    }
  };
}
