/** What every phase module of the bench is given, and the set-up the phases against the AWS emulator share. */

export interface PhaseOptions {
  brokers: string;
  redisUrl: string;
  /** Prefix of the phase's topics, groups and Redis keys. */
  runId: string;
  say?: (line: string) => void;
}

/** The SDK reads credentials from the environment; the emulator only needs some. */
export function emulatorCredentials(): void {
  process.env.AWS_ACCESS_KEY_ID ??= 'bench';
  process.env.AWS_SECRET_ACCESS_KEY ??= 'bench';
}
