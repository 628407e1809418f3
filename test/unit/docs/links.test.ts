/**
 * Every relative link of README.md, CONTRIBUTING.md and docs/*.md reaches a file of the repository, and
 * every `#anchor` a heading (GitHub's slug) or an `id` of the target: moving text between files must not
 * leave links behind.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { docFiles, ROOT, readDoc } from '../../support/markdown.ts';

/** GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens, repeats numbered. */
function anchorsOf(markdown: string): Set<string> {
  const out = new Set<string>();
  const seen = new Map<string, number>();
  let fence = false;
  for (const line of markdown.split('\n')) {
    if (/^\s*```/.test(line)) fence = !fence;
    if (fence) continue;
    const h = /^#{1,6}\s+(.*)$/.exec(line);
    if (h) {
      const base = (h[1] as string)
        .trim()
        .toLowerCase()
        .replace(/[^\p{L}\p{N}\s_-]/gu, '')
        .replace(/\s/g, '-');
      const n = seen.get(base) ?? 0;
      seen.set(base, n + 1);
      out.add(n ? `${base}-${n}` : base);
    }
    for (const m of line.matchAll(/<a id="([^"]+)">/g)) out.add(m[1] as string);
  }
  return out;
}

function linksOf(markdown: string): string[] {
  const out: string[] = [];
  let fence = false;
  for (const line of markdown.split('\n')) {
    if (/^\s*```/.test(line)) fence = !fence;
    if (fence) continue;
    for (const m of line.replace(/`[^`]*`/g, '').matchAll(/\]\(([^)\s]+)\)/g)) out.push(m[1] as string);
  }
  return out.filter((l) => !/^[a-z]+:/.test(l));
}

describe('links in the documentation', () => {
  const cases = docFiles().flatMap((file) => linksOf(readDoc(file)).map((link) => [file, link] as const));
  it('finds links to check', () => expect(cases.length).toBeGreaterThan(50));
  it.each(cases)('%s → %s', (file, link) => {
    const [target = '', anchor] = link.split('#');
    const resolved = target ? path.join(path.dirname(path.join(ROOT, file)), target) : path.join(ROOT, file);
    expect(existsSync(resolved), `${resolved} does not exist`).toBe(true);
    if (anchor && statSync(resolved).isFile()) {
      expect([...anchorsOf(readFileSync(resolved, 'utf8'))]).toContain(anchor);
    }
  });

  // Paths named in backticks (`src/state/ledger.ts`) move with the code: each must still exist.
  const paths = docFiles().flatMap((file) =>
    [...readDoc(file).matchAll(/`((?:src|test|deploy|schemas|helm|docs)\/[^`\s]*)`/g)]
      .map((m) => m[1] as string)
      .filter((p) => !/[*{<…]/.test(p))
      .map((p) => [file, p] as const),
  );
  it('finds repository paths to check', () => expect(paths.length).toBeGreaterThan(30));
  it.each(paths)('%s names %s', (_, p) => {
    expect(existsSync(path.join(ROOT, p.replace(/:\d+$/, ''))), `${p} does not exist`).toBe(true);
  });
});
