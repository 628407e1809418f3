import { readdirSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { MeterlineError } from '../../../src/errors.ts';
import { SCRIPT_CODE, scriptError } from '../../../src/metering/script-codes.ts';
import { SCRIPTS } from '../../../src/redis/client.ts';

const p = { topic: 'usage', partition: 3 };
const LUA = new URL('../../../src/redis/lua/', import.meta.url);

describe('script return codes', () => {
  it('map to the typed errors the engine and the commit stage act on', () => {
    const cases: [number | (number | string)[], string, boolean][] = [
      [[SCRIPT_CODE.fenced], 'fenced', false],
      [SCRIPT_CODE.fenced, 'fenced', false],
      [[SCRIPT_CODE.stateLost], 'state_lost', true],
      [SCRIPT_CODE.stateLost, 'state_lost', true],
      [[SCRIPT_CODE.behind, '41'], 'store_behind', true],
      [[SCRIPT_CODE.hourFinalized, 1_700_000_000_000], 'late_event', true],
      [[SCRIPT_CODE.stale, '90'], 'stale_batch', false],
    ];
    for (const [answer, code, retriable] of cases) {
      const error = scriptError(answer, p, { held: '40' });
      expect(error, `${answer}`).toBeInstanceOf(MeterlineError);
      expect(error).toMatchObject({ code, retriable, context: { topic: 'usage', partition: 3 } });
    }
    expect(scriptError([SCRIPT_CODE.behind, '41'], p, { held: '40' })?.context).toMatchObject({
      checkpoint: '41',
      held: '40',
    });
  });

  it('leave results and the moved answer to the caller', () => {
    for (const answer of [[0], [1], [12, 0, 0, 3], 1, [SCRIPT_CODE.moved]]) {
      expect(scriptError(answer, p)).toBeUndefined();
    }
  });

  it('cover every negative answer of the partition scripts', () => {
    const known = new Set<number>(Object.values(SCRIPT_CODE));
    for (const script of ['applyBatch', 'finalizeHour', 'cutCustomer', 'markEmitted'] as const) {
      const { file, lua: source } = SCRIPTS[script];
      expect(readdirSync(LUA)).toContain(file);
      const answers = [...source.matchAll(/return \{?\s*(-\d+)/g)].map((m) => Number(m[1]));
      expect(answers.length, script).toBeGreaterThan(0);
      for (const a of answers) expect(known.has(a), `${script} returns ${a}`).toBe(true);
    }
  });
});
