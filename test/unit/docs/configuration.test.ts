/**
 * docs/configuration.md is the reference of every setting: each key of EnvSchema (src/config/config.ts) has
 * a row with the default the schema applies, every row names a key meterline reads, and every METERLINE_*
 * variable read outside the schema is listed too.
 */
import { describe, expect, it } from 'vitest';
import { DEFAULT_OPS_PORT } from '../../../src/config/config.ts';
import { parseDuration } from '../../../src/config/duration.ts';
import { OTHER_METERLINE_VARIABLES } from '../../../src/config/env-checks.ts';
import { EnvSchema } from '../../../src/config/env-schema.ts';
import { DEFAULT_ACCEPTANCE_WINDOW_MS } from '../../../src/metering/aws-window.ts';
import { docFiles, readDoc } from '../../support/markdown.ts';

/** Rows of every table whose first cell is one backticked variable name: name → the second cell. */
function rows(): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of readDoc('docs/configuration.md').split('\n')) {
    const m = /^\|\s*`([A-Z][A-Z0-9_]+)`\s*\|([^|]*)\|/.exec(line);
    if (m) out.set(m[1] as string, (m[2] as string).trim());
  }
  return out;
}

const KEYS = Object.keys(EnvSchema.shape);
/** What the schema makes of the smallest valid input: its defaults. */
const defaults = EnvSchema.parse({
  REDIS_URL: 'redis://127.0.0.1:6379',
  METERLINE_PLAN: 'plan.json',
}) as Record<string, unknown>;

describe('docs/configuration.md', () => {
  const table = rows();

  it('has a row for every key of EnvSchema', () => {
    expect(KEYS.filter((k) => !table.has(k))).toEqual([]);
  });

  it('lists every METERLINE_* variable read outside the schema', () => {
    expect([...OTHER_METERLINE_VARIABLES].filter((k) => !table.has(k))).toEqual([]);
  });

  it('names only variables meterline reads', () => {
    const read = new Set([...KEYS, ...OTHER_METERLINE_VARIABLES]);
    expect([...table.keys()].filter((k) => !read.has(k))).toEqual([]);
  });

  it.each(KEYS.filter((k) => defaults[k] !== undefined && k !== 'METERLINE_PLAN' && k !== 'REDIS_URL'))(
    "%s: the documented default is the schema's",
    (key) => {
      const cell = table.get(key) ?? '';
      const shown = /`([^`]+)`/.exec(cell)?.[1];
      const value = defaults[key];
      if (typeof value === 'number' && shown !== undefined && /[a-z]$/.test(shown)) {
        expect(parseDuration(shown), `${key}: ${cell}`).toBe(value);
      } else {
        expect(shown, `${key}: ${cell}`).toBe(String(value));
      }
    },
  );

  it('METERLINE_OPS_PORT: the default port of each role', () => {
    const cell = table.get('METERLINE_OPS_PORT') ?? '';
    for (const [role, port] of Object.entries(DEFAULT_OPS_PORT))
      expect(cell).toMatch(new RegExp(`\`${port}\` \\([^)]*${role}`));
  });

  it('every "`KEY` (`default`)" in the README and docs/ is the schema\'s default', () => {
    const mentions = docFiles().flatMap((file) =>
      [...readDoc(file).matchAll(/`([A-Z][A-Z0-9_]+)` \(`([^`]+)`/g)].map((m) => ({
        file,
        key: m[1] as string,
        shown: m[2] as string,
      })),
    );
    expect(mentions.length).toBeGreaterThan(5);
    for (const { file, key, shown } of mentions) {
      const value = defaults[key];
      const parsed = typeof value === 'number' && /[a-z]$/.test(shown) ? parseDuration(shown) : shown;
      expect(String(parsed), `${file}: ${key} (${shown})`).toBe(String(value));
    }
  });

  it("the README's timeline names AWS's acceptance windows as the code has them", () => {
    const readme = readDoc('README.md');
    expect(DEFAULT_ACCEPTANCE_WINDOW_MS.BatchMeterUsage / 3_600_000).toBe(24);
    expect(DEFAULT_ACCEPTANCE_WINDOW_MS.MeterUsage / 3_600_000).toBe(6);
    expect(readme).toMatch(/BatchMeterUsage` \(24 h/);
    expect(readme).toMatch(/MeterUsage`\): 6 h/);
  });
});
