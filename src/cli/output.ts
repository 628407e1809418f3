/**
 * What commands print, the same way everywhere: data on stdout only (logs and progress go to stderr), in
 * the format `-o table|json|yaml` asks for (`--json` stays as a short form of `-o json`). Tables have box
 * borders and colours only on a terminal; piped, they are plain columns a script can cut. NO_COLOR
 * (https://no-color.org) turns the colours off on a terminal too.
 */
import Table from 'cli-table3';
import { type Command, Option } from 'commander';
import { stringify } from 'yaml';

export const OUTPUT_FORMATS = ['table', 'json', 'yaml'] as const;
export type OutputFormat = (typeof OUTPUT_FORMATS)[number];

export interface OutputOptions {
  output: OutputFormat;
  json?: boolean;
}

/** Adds `-o, --output` and the `--json` alias to a command that prints data. */
export function withOutput(command: Command, defaultFormat: OutputFormat = 'table'): Command {
  return command
    .addOption(
      new Option('-o, --output <format>', 'output format').choices(OUTPUT_FORMATS).default(defaultFormat),
    )
    .addOption(new Option('--json', 'same as -o json').hideHelp());
}

/**
 * `data` in the format `-o` (or `--json`) asks for: JSON (one document, indented) or YAML; the table form
 * is the command's own.
 */
export function printData(o: OutputOptions, data: unknown, table: () => string): void {
  const format = o.json ? 'json' : o.output;
  if (format === 'json') process.stdout.write(`${JSON.stringify(data, null, 2)}\n`);
  else if (format === 'yaml') process.stdout.write(stringify(data));
  else process.stdout.write(table());
}

const colours = () => !process.env.NO_COLOR;

/**
 * A table: cli-table3's boxes on a terminal (coloured headers unless NO_COLOR), plain left-aligned columns
 * two spaces apart otherwise. No trailing newline.
 */
export function renderTable(head: readonly string[], rows: readonly (readonly unknown[])[]): string {
  const cells = rows.map((r) => r.map((c) => (c === undefined || c === null ? '' : String(c))));
  if (process.stdout.isTTY) {
    const table = new Table({
      head: [...head],
      style: colours() ? {} : { head: [], border: [] },
    });
    for (const r of cells) table.push(r);
    return table.toString();
  }
  const widths = head.map((h, i) => Math.max(h.length, ...cells.map((r) => (r[i] ?? '').length)));
  const line = (r: readonly string[]) =>
    r
      .map((c, i) => c.padEnd(widths[i] ?? 0))
      .join('  ')
      .trimEnd();
  return [line(head), ...cells.map(line)].join('\n');
}

/** `Examples:` at the end of a command's help, each line a full command. */
export function withExamples(command: Command, examples: readonly string[]): Command {
  return command.addHelpText('after', `\nExamples:\n${examples.map((e) => `  $ ${e}`).join('\n')}\n`);
}
