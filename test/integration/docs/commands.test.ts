/**
 * Issue 20: every command line of the README and docs/ that can run here is checked. Each `meterline` line
 * (in a ```sh or ```bash block, or after a `$ ` prompt in an output example) is parsed by the CLI's own
 * parser, so an unknown command or flag fails; the read-only ones and every `--help` / `--version` are also
 * run for real against the local stack, with this test's own topics and key prefix. `npm run` lines must
 * name a script, and the read-only `stack:status` is run. Blocks that cannot run here (helm, kubectl, AWS)
 * carry `<!-- docs-test: not-local (why) -->`: their meterline lines are still parsed, the rest is counted.
 */

import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cli } from '../../support/cli.ts';
import { testKafka } from '../../support/harness.ts';
import {
  type CommandBlock,
  docFiles,
  fencedBlocks,
  type Invocation,
  invocationOf,
  parseMeterline,
  ROOT,
  readDoc,
  shellCommands,
} from '../../support/markdown.ts';
import { type TestPipeline, testPipeline } from '../../support/pipeline-env.ts';

interface Found {
  where: string;
  block: CommandBlock;
  words: string[];
  invocation: Invocation;
}

const SHELL = new Set(['sh', 'bash']);
const blocks = docFiles().flatMap((file) => fencedBlocks(file, readDoc(file)));

function commandsOf(block: CommandBlock): Found[] {
  const lines = SHELL.has(block.lang)
    ? shellCommands(block.text)
    : // Output examples: only the lines typed at a `$ ` prompt.
      block.text
        .split('\n')
        .filter((l) => l.startsWith('$ '))
        .flatMap((l) => shellCommands(l.slice(2)));
  return lines.map((words) => ({
    where: `${block.file}:${block.line}`,
    block,
    words,
    invocation: invocationOf(words),
  }));
}

const found = blocks.flatMap(commandsOf);
const meterlineLines = found.filter((f) => f.invocation.kind === 'meterline');
const npmLines = found.filter((f) => f.invocation.kind === 'npm');
const pkg = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as {
  scripts: Record<string, string>;
};

/** Commands that only read (or write to this test's own topics), and end by themselves. */
const READ_ONLY = [
  'status',
  'customers',
  'dlq list',
  'dlq inspect',
  'emulator records',
  'reconcile internal',
  'reconcile gaps',
  'trace',
];
/** npm scripts that only read. `stack:down` and the like are never run by a test. */
const RUNNABLE_SCRIPTS = new Set(['stack:status']);

function argsOf(f: Found): string[] {
  return f.invocation.kind === 'meterline' ? f.invocation.args : [];
}

function runsForReal(f: Found): boolean {
  if (f.block.notLocal || !SHELL.has(f.block.lang)) return false;
  const args = argsOf(f);
  if (args.some((a) => ['--help', '-h', '--version', '-V'].includes(a))) return true;
  const path = args.filter((a) => !a.startsWith('-')).slice(0, 2);
  if (path[0] === 'dlq' && path[1] === 'redrive') return args.includes('--dry-run');
  return (
    READ_ONLY.some((c) => path.join(' ').startsWith(c)) && !(path[0] === 'customers' && path[1] === 'link')
  );
}

describe('the parser refuses what the docs must not contain', () => {
  it('an unknown command, an unknown flag, an excess argument and a duration without a unit', async () => {
    await expect(parseMeterline(['no-such-command'])).rejects.toThrow(/unknown command/);
    await expect(parseMeterline(['status', '--no-such-flag'])).rejects.toThrow(/unknown option/);
    await expect(parseMeterline(['dlq', 'no-such-subcommand'])).rejects.toThrow(/unknown command/);
    await expect(parseMeterline(['status', 'extra'])).rejects.toThrow(/too many arguments/);
    await expect(parseMeterline(['status', '--timeout', '5'])).rejects.toThrow();
    await expect(parseMeterline(['status', '-o', 'json'])).resolves.toBeUndefined();
    await expect(parseMeterline(['--version'])).resolves.toBeUndefined();
  });
});

describe('command lines of README.md, CONTRIBUTING.md and docs/*.md', () => {
  it('finds the quickstart, meterline lines and not-local blocks', () => {
    const notLocal = blocks.filter((b) => b.notLocal);
    const realRuns = meterlineLines.filter(runsForReal);
    // One line for the record: what this test covers.
    process.stdout.write(
      `docs commands: ${blocks.filter((b) => SHELL.has(b.lang)).length} sh/bash blocks, ${notLocal.length} marked not-local, ` +
        `${meterlineLines.length} meterline lines parsed (${realRuns.length} run for real), ${npmLines.length} npm lines, ` +
        `${found.filter((f) => f.invocation.kind === 'other').length} other commands skipped\n`,
    );
    expect(meterlineLines.length).toBeGreaterThan(10);
    expect(realRuns.length).toBeGreaterThan(3);
    expect(notLocal.length).toBeGreaterThan(2);
    // A marker belongs to a shell block; on anything else it is a mistake that hides nothing.
    for (const b of notLocal) expect(SHELL.has(b.lang), `${b.file}:${b.line}`).toBe(true);
  });

  it("the README's test command is exactly what .ci/run runs", () => {
    const readme = found.filter((f) => f.block.file === 'README.md' && f.invocation.kind === 'npm');
    const tests = readme.filter((f) => f.invocation.kind === 'npm' && f.invocation.script === 'test');
    expect(tests.map((f) => f.words.join(' '))).toEqual(['npm test']);
    expect(readme.some((f) => f.words.join(' ') === 'npm run demo')).toBe(true);
    const ci = readFileSync(path.join(ROOT, '.ci/run'), 'utf8');
    expect(ci.split('\n').filter((l) => /^npm test\b/.test(l))).toEqual(['npm test']);
  });

  it.each(meterlineLines.map((f) => [`${f.where}: ${f.words.join(' ')}`, f] as const))(
    'parses %s',
    async (_, f) => {
      await parseMeterline(argsOf(f));
    },
  );

  it.each(npmLines.map((f) => [`${f.where}: ${f.words.join(' ')}`, f] as const))(
    'names an npm script: %s',
    (_, f) => {
      if (f.invocation.kind !== 'npm') throw new Error('not an npm line');
      if (f.invocation.script === 'ci') return;
      expect(Object.keys(pkg.scripts)).toContain(f.invocation.script);
    },
  );
});

describe('run for real against the local stack', () => {
  const kafka = testKafka();
  let tp: TestPipeline;
  let env: Record<string, string>;

  beforeAll(async () => {
    tp = testPipeline('docs-commands');
    await tp.createTopics(kafka);
    env = { ...tp.env, LOG_LEVEL: 'warn', OTEL_SDK_DISABLED: 'true' };
  });
  afterAll(async () => {
    if (tp) await tp.cleanup(kafka);
  });

  const real = meterlineLines.filter(runsForReal);
  it.each(real.map((f) => [`${f.where}: ${f.words.join(' ')}`, f] as const))('runs %s', async (_, f) => {
    const args = argsOf(f);
    const r = await cli(args, env, { hardLimitMs: 60_000 });
    const informational = args.some((a) => ['--help', '-h', '--version', '-V'].includes(a));
    // 0: done; 1: ran and found nothing (an example id not on this test's topic). Never a usage or
    // configuration error (2), never a service that did not answer (3).
    expect(r.code, r.stderr).not.toBeNull();
    if (informational) expect(r.code, r.stderr).toBe(0);
    else expect([0, 1], r.stderr).toContain(r.code);
  });

  const scripts = npmLines.filter(
    (f) => f.invocation.kind === 'npm' && RUNNABLE_SCRIPTS.has(f.invocation.script) && !f.block.notLocal,
  );
  it.each(scripts.map((f) => [`${f.where}: ${f.words.join(' ')}`, f] as const))('runs %s', async (_, f) => {
    const [cmd, ...rest] = f.words;
    const code = await new Promise<number | null>((resolve) => {
      execFile(cmd as string, rest, { cwd: ROOT, env: process.env, timeout: 60_000 }, (error) =>
        resolve(error ? ((error as { code?: number }).code ?? 1) : 0),
      );
    });
    expect(code).toBe(0);
  });
});
