/** The windowing processor's counters: what became of the events it read, batches and replays. */
export interface ProcessorStats {
  events: number;
  applied: number;
  duplicates: number;
  carriedLate: number;
  failed: Record<string, number>;
  /** Input re-read after a state loss that was already handled before it (bad or too old). */
  replaySkipped: number;
  /** Replayed events that a frozen record counts already (remembered for dedupe only). */
  replayCounted: number;
  /** Events whose tags AWS would refuse, billed untagged. */
  untagged: number;
  /** Events forwarded to their customer's partition. */
  forwarded: number;
  replays: number;
  batches: number;
}

export function emptyStats(): ProcessorStats {
  return {
    events: 0,
    applied: 0,
    duplicates: 0,
    carriedLate: 0,
    failed: {},
    replaySkipped: 0,
    replayCounted: 0,
    untagged: 0,
    forwarded: 0,
    replays: 0,
    batches: 0,
  };
}
