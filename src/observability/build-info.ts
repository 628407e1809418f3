/** `meterline_build_info`: 1 per role a process runs, labelled with its build (as `meterline --version` says it). */

import { metrics } from './metrics.ts';
import { versionLine } from './version.ts';

export function reportBuildInfo(roles: readonly string[]): void {
  // `meterline 0.1.0 (commit 1a2b3c4, node v24.11.0, linux-x64)`
  const line = versionLine();
  const version = /^meterline (\S+)/.exec(line)?.[1] ?? 'unknown';
  const commit = /commit (\S+?),/.exec(line)?.[1] ?? 'unknown';
  for (const role of roles) metrics.buildInfo.set({ version, commit, node: process.version, role }, 1);
}
