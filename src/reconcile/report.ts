/**
 * How reconcile reports print: a table on a terminal, CSV when piped (for cron and spreadsheets), or what
 * `-o` asks for: table (boxes on a terminal, plain columns piped), JSON, YAML, or CSV (RFC 4180: fields
 * with a comma, quote or line break are quoted, quotes doubled).
 */

import type { Command } from 'commander';
import { Option } from 'commander';
import { type OutputFormat, printData, renderTable } from '../cli/output.ts';

export const REPORT_FORMATS = ['table', 'json', 'yaml', 'csv'] as const;
export type ReportFormat = (typeof REPORT_FORMATS)[number];

export function withReportOutput(command: Command): Command {
  return command
    .addOption(
      new Option(
        '-o, --output <format>',
        'output format: table, json, yaml or csv (default: table on a terminal, csv piped)',
      ).choices(REPORT_FORMATS),
    )
    .addOption(new Option('--json', 'same as -o json').hideHelp());
}

export function reportFormat(
  o: { output?: ReportFormat; json?: boolean },
  terminal: boolean = process.stdout.isTTY === true,
): ReportFormat {
  if (o.json) return 'json';
  return o.output ?? (terminal ? 'table' : 'csv');
}

export interface Column<R> {
  head: string;
  value: (row: R) => unknown;
}

/** Prints a report: `data` as JSON/YAML, the rows as CSV or a table, with an optional footer (table only). */
export function printReport<R>(
  format: ReportFormat,
  data: unknown,
  rows: readonly R[],
  columns: readonly Column<R>[],
  footer = '',
): void {
  if (format === 'csv') {
    process.stdout.write(
      toCsv(
        columns.map((c) => c.head),
        rows.map((r) => columns.map((c) => c.value(r))),
      ),
    );
    return;
  }
  printData(
    { output: format as OutputFormat },
    data,
    () =>
      `${renderTable(
        columns.map((c) => c.head),
        rows.map((r) => columns.map((c) => c.value(r))),
      )}\n${footer}`,
  );
}

export function toCsv(head: readonly string[], rows: readonly (readonly unknown[])[]): string {
  const cell = (v: unknown) => {
    const s = v === undefined || v === null ? '' : Array.isArray(v) ? v.join(' ') : String(v);
    return /[",\r\n]/.test(s) ? `"${s.replaceAll('"', '""')}"` : s;
  };
  return `${[head, ...rows].map((r) => r.map(cell).join(',')).join('\r\n')}\r\n`;
}

/** A number for a table cell: blank when absent, at most 6 decimals. */
export function num(v: number | undefined): string {
  if (v === undefined) return '';
  return Number.isInteger(v) ? String(v) : String(Number(v.toFixed(6)));
}
