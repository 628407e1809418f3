/**
 * The dependency check of `npm run check` (knip, configured in knip.json): a package declared in package.json
 * that no entry point imports fails it. Runs knip on a copy of the repository's sources with one unused
 * dependency and one unused devDependency added, and on the copy as it is.
 */
import { execFile } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('../../..', import.meta.url));
const KNIP = path.join(ROOT, 'node_modules/.bin/knip');
let dir: string;

function knip(cwd: string): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    execFile(KNIP, ['--dependencies', '--no-progress'], { cwd }, (error, stdout, stderr) => {
      const code = error ? (typeof error.code === 'number' ? error.code : 1) : 0;
      resolve({ code, out: stdout + stderr });
    });
  });
}

beforeAll(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'meterline-knip-'));
  for (const entry of ['src', 'deploy', 'test', 'package.json', 'knip.json', 'tsconfig.json']) {
    cpSync(path.join(ROOT, entry), path.join(dir, entry), {
      recursive: true,
      filter: (from) => !from.includes(`${path.sep}.deps`),
    });
  }
  symlinkSync(path.join(ROOT, 'node_modules'), path.join(dir, 'node_modules'));
});

afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('the dependency check (knip)', () => {
  it('is part of npm run check, which npm test runs first', () => {
    const scripts = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')).scripts;
    expect(scripts.check).toContain('knip --dependencies');
    expect(scripts.test).toMatch(/^npm run check && /);
  });

  it('passes on the repository as it is', async () => {
    const r = await knip(dir);
    expect(r.out).toBe('');
    expect(r.code).toBe(0);
  });

  it('fails on a declared dependency nothing imports, and names it', async () => {
    const file = path.join(dir, 'package.json');
    const original = readFileSync(file, 'utf8');
    const pkg = JSON.parse(original);
    pkg.dependencies['is-number'] = '^7.0.0';
    pkg.devDependencies['left-pad'] = '^1.3.0';
    writeFileSync(file, `${JSON.stringify(pkg, null, 2)}\n`);
    try {
      const r = await knip(dir);
      expect(r.code).not.toBe(0);
      expect(r.out).toMatch(/Unused dependencies \(1\)\s+is-number/);
      expect(r.out).toMatch(/Unused devDependencies \(1\)\s+left-pad/);
    } finally {
      writeFileSync(file, original);
    }
  });
});
