/** Starts (or reuses) the local stack once for the whole run, unless endpoints come from the environment. */
export default async function setup(): Promise<(() => Promise<void>) | undefined> {
  // Pure unit runs (npm run test:unit) need no services.
  if (process.env.METERLINE_NO_STACK === '1') return undefined;
  const { ensureStack, stopStack } = await import('../../deploy/stack/index.ts');
  const env = await ensureStack();
  for (const [k, v] of Object.entries(env)) if (typeof v === 'string') process.env[k] = v;
  // The emulator ignores signatures, but the SDK needs credentials to sign with.
  process.env.AWS_ACCESS_KEY_ID ??= 'test';
  process.env.AWS_SECRET_ACCESS_KEY ??= 'test';
  return async () => {
    // Stop only what this run started; services the developer (or another run) had up stay up.
    if (env.started.length && process.env.METERLINE_KEEP_STACK !== '1') {
      await stopStack({ only: env.started as import('../../deploy/stack/index.ts').ServiceName[] });
    }
  };
}
