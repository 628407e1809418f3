/**
 * Reads the documentation's command blocks: fenced ```sh / ```bash blocks of README.md, CONTRIBUTING.md and
 * docs/*.md, each with the marker comment on the line before it, and the shell lines in them split into
 * simple commands (continuations joined, comments dropped, `&&`, `;` and `|` separating commands).
 */
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Command } from 'commander';
import { buildProgram } from '../../src/cli/program.ts';

export const ROOT = fileURLToPath(new URL('../../', import.meta.url));

/** `<!-- docs-test: not-local (why) -->` on the line before a block: it cannot run on this machine. */
export const NOT_LOCAL = /^<!--\s*docs-test:\s*not-local\b.*-->\s*$/;

export interface CommandBlock {
  file: string;
  /** 1-based line of the opening fence. */
  line: number;
  lang: string;
  notLocal: boolean;
  text: string;
}

/** The documentation files the test reads, relative to the repository root. */
export function docFiles(): string[] {
  const docs = readdirSync(path.join(ROOT, 'docs'))
    .filter((f) => f.endsWith('.md'))
    .sort()
    .map((f) => `docs/${f}`);
  return ['README.md', 'CONTRIBUTING.md', ...docs];
}

export function fencedBlocks(file: string, markdown: string): CommandBlock[] {
  const lines = markdown.split('\n');
  const blocks: CommandBlock[] = [];
  for (let i = 0; i < lines.length; i++) {
    const open = /^\s*```(\w*)\s*$/.exec(lines[i] ?? '');
    if (!open) continue;
    const start = i;
    const body: string[] = [];
    for (i++; i < lines.length && !/^\s*```\s*$/.test(lines[i] ?? ''); i++) body.push(lines[i] ?? '');
    let before = start - 1;
    while (before >= 0 && (lines[before] ?? '').trim() === '') before--;
    blocks.push({
      file,
      line: start + 1,
      lang: open[1] ?? '',
      notLocal: NOT_LOCAL.test((lines[before] ?? '').trim()),
      text: body.join('\n'),
    });
  }
  return blocks;
}

/**
 * Shell words of a block, as simple commands: quotes respected (their text kept, `$VAR` and `$(…)` left as
 * they are), `\`-continued lines joined, `#` comments dropped, `&&`, `||`, `;` and `|` ending a command.
 */
export function shellCommands(text: string): string[][] {
  const joined = text.replace(/\\\n/g, ' ');
  const commands: string[][] = [];
  for (const line of joined.split('\n')) {
    let words: string[] = [];
    let word = '';
    let inWord = false;
    let quote: '"' | "'" | undefined;
    let depth = 0;
    const endWord = () => {
      if (inWord) words.push(word);
      word = '';
      inWord = false;
    };
    const endCommand = () => {
      endWord();
      if (words.length) commands.push(words);
      words = [];
    };
    for (let i = 0; i < line.length; i++) {
      const c = line[i] as string;
      if (quote) {
        if (c === quote) quote = undefined;
        else word += c;
        continue;
      }
      if (c === '$' && line[i + 1] === '(') depth++;
      if (c === ')' && depth > 0) depth--;
      if (depth > 0) {
        word += c;
        inWord = true;
        continue;
      }
      if (c === '"' || c === "'") {
        quote = c;
        inWord = true;
      } else if (c === '#' && !inWord) break;
      else if (c === ' ' || c === '\t') endWord();
      else if (c === ';' || c === '|' || (c === '&' && line[i + 1] === '&')) {
        endCommand();
        if (line[i + 1] === c) i++;
      } else {
        word += c;
        inWord = true;
      }
    }
    endCommand();
  }
  return commands;
}

export type Invocation =
  | { kind: 'meterline'; args: string[] }
  | { kind: 'npm'; script: string; args: string[] }
  | { kind: 'other'; program: string };

/**
 * What a simple command runs: meterline (`meterline …`, `npx meterline …`, `npm run meterline -- …`,
 * `node src/cli/main.ts …`, also after `kubectl exec … --`), an npm script, or something else.
 */
export function invocationOf(words: string[]): Invocation {
  let w = words;
  while (w.length && /^[A-Za-z_][A-Za-z0-9_]*=/.test(w[0] as string)) w = w.slice(1);
  const at = w.findIndex(
    (t, i) =>
      (t === 'meterline' && (i === 0 || w[i - 1] === 'npx' || w[i - 1] === '--')) ||
      (t === 'src/cli/main.ts' && w[i - 1] === 'node'),
  );
  if (w[0] === 'npm' && w[1] === 'run' && w[2] === 'meterline') {
    const dash = w.indexOf('--');
    return { kind: 'meterline', args: dash < 0 ? [] : w.slice(dash + 1) };
  }
  if (at >= 0) return { kind: 'meterline', args: w.slice(at + 1) };
  if (w[0] === 'npm' && w[1] === 'run' && w[2]) return { kind: 'npm', script: w[2], args: w.slice(3) };
  if (w[0] === 'npm' && (w[1] === 'test' || w[1] === 'ci'))
    return { kind: 'npm', script: w[1], args: w.slice(2) };
  return { kind: 'other', program: w[0] ?? '' };
}

/** Commander's own outcomes that are not errors. */
const FINE = new Set(['commander.helpDisplayed', 'commander.help', 'commander.version']);

/**
 * Parses `meterline <args>` with the CLI's own command tree, every action replaced by a no-op: throws on an
 * unknown command or option, a missing or excess argument, or an option value the CLI's parser refuses.
 */
export async function parseMeterline(args: readonly string[]): Promise<void> {
  const program = buildProgram();
  const silence = (c: Command) => {
    c.exitOverride();
    c.configureOutput({ writeOut: () => {}, writeErr: () => {}, outputError: () => {} });
    // Only commands that run something get the no-op: a parent such as `dlq` must still refuse `dlq bogus`.
    if ((c as unknown as { _actionHandler?: unknown })._actionHandler) c.action(() => {});
    for (const sub of c.commands) silence(sub);
  };
  silence(program);
  try {
    await program.parseAsync([...args], { from: 'user' });
  } catch (error) {
    const code = (error as { code?: string }).code;
    if (code && FINE.has(code)) return;
    throw new Error(`meterline ${args.join(' ')}: ${(error as Error).message} (${code})`);
  }
}

export function readDoc(file: string): string {
  return readFileSync(path.join(ROOT, file), 'utf8');
}
