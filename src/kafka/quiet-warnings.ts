/**
 * kafkajs 2.2.4 schedules a negative timeout on Node 24, which prints a harmless TimeoutNegativeWarning.
 * Filter that one warning (and only it) so operators' logs and CLI output stay clean.
 */
let installed = false;

export function silenceKafkajsTimeoutWarning(): void {
  if (installed) return;
  installed = true;
  const emitWarning = process.emitWarning.bind(process);
  process.emitWarning = ((warning: string | Error, ...rest: unknown[]) => {
    const name = warning instanceof Error ? warning.name : rest[0];
    if (name === 'TimeoutNegativeWarning') return;
    (emitWarning as (...args: unknown[]) => void)(warning, ...rest);
  }) as typeof process.emitWarning;
}
