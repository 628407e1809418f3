/**
 * Invariant 1 with the dedupe index spilling to disk: the same kill -9 test as crash.test.ts, with a memory
 * budget so small (the setting under test) that every partition keeps most of its ids in spilled runs, and
 * each killed process leaves its spill files behind for the next one to remove. The resent ids are sent after
 * everything else, so only the spilled ids refuse them. Every window must come out exact.
 */
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { CRASH_EVENTS, crashTest, KILLS } from '../support/crash-scenario.ts';

describe('crash test, dedupe index spilled', () => {
  it(`counts ${CRASH_EVENTS} events exactly once through ${KILLS} kill -9s, with 10,000 ids in memory`, async () => {
    const spillDir = mkdtempSync(path.join(tmpdir(), 'crash-spill-'));
    // Proof that the runs were really on disk while the processes ran (a budget that never spills tests nothing).
    let mostFiles = 0;
    const watch = setInterval(() => {
      const files = readdirSync(spillDir, { recursive: true }).filter((f) => String(f).endsWith('.ids'));
      mostFiles = Math.max(mostFiles, files.length);
    }, 200);
    try {
      // The resends come last: by then their ids are in spilled runs, most of them of frozen hours.
      await crashTest(
        'crash-spill',
        { METERLINE_DEDUPE_MEMORY_IDS: '10000', METERLINE_DEDUPE_SPILL_DIR: spillDir },
        { resendsLast: true },
      );
      // The killed processes' folders went when the next one started; the last one removed its own
      // when it stopped.
      expect(mostFiles).toBeGreaterThan(0);
      expect(readdirSync(spillDir)).toEqual([]);
    } finally {
      clearInterval(watch);
      rmSync(spillDir, { recursive: true, force: true });
    }
  }, 600_000);
});
