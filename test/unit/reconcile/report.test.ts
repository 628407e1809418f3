/** Reports: a table on a terminal, CSV when piped (for cron and spreadsheets), or what -o asks for. */
import { Command } from 'commander';
import { describe, expect, it } from 'vitest';
import { reportFormat, withReportOutput } from '../../../src/reconcile/report.ts';

const parse = (args: string[]) =>
  withReportOutput(new Command('report').exitOverride()).parse(args, { from: 'user' }).opts() as Parameters<
    typeof reportFormat
  >[0];

describe('reconcile report format', () => {
  it('is a table on a terminal and CSV when piped, unless -o says otherwise', () => {
    expect(reportFormat(parse([]), true)).toBe('table');
    expect(reportFormat(parse([]), false)).toBe('csv');
    expect(reportFormat(parse(['-o', 'table']), false)).toBe('table');
    expect(reportFormat(parse(['-o', 'json']), true)).toBe('json');
    expect(reportFormat(parse(['--json']), false)).toBe('json');
  });
});
