/**
 * The Lua scripts' file names and headers, read without Redis: a key count in a name that disagrees with
 * the script would make ioredis pass ARGV as KEYS (or the reverse) on every call.
 */
import { describe, expect, it } from 'vitest';
import { SCRIPTS } from '../../../src/redis/client.ts';

describe('Lua scripts', () => {
  it('name their key count, and the script uses exactly KEYS[1..count]', () => {
    for (const [name, { file, lua, numberOfKeys }] of Object.entries(SCRIPTS)) {
      const body = lua.replace(/--\[\[[\s\S]*?\]\]/, '');
      const used = [...body.matchAll(/KEYS\[(\d+)\]/g)].map((m) => Number(m[1]));
      if (numberOfKeys === undefined) {
        // Only a script whose keys depend on its input goes without a count (it reads #KEYS or KEYS[i]).
        expect(file, name).toBe(`${name}.lua`);
        expect(/#KEYS|KEYS\[[A-Za-z_]/.test(body), `${file} indexes its keys by input`).toBe(true);
      } else {
        expect(file, name).toBe(`${name}-${numberOfKeys}.lua`);
        expect(Math.max(...used), file).toBe(numberOfKeys);
        expect(new Set(used).size, `${file} uses every key it names`).toBe(numberOfKeys);
      }
    }
  });

  it('open with a header that lists KEYS, ARGV and what they return', () => {
    for (const { file, lua } of Object.values(SCRIPTS)) {
      const header = /^--\[\[([\s\S]*?)\]\]/.exec(lua)?.[1] ?? '';
      expect(header, file).toMatch(/KEYS\[1\]/);
      expect(header, file).toMatch(/ARGV\[1\]/);
      expect(header, file).toMatch(/Returns/);
    }
  });
});
