/**
 * `meterline --version`: the package version and the build it runs from, on one line:
 * `meterline 0.1.0 (commit 1a2b3c4, node v24.11.0, linux-x64)`. The commit is read from the checkout's .git
 * (no git binary needed); an image without one says `commit unknown`.
 */
import { existsSync, readFileSync } from 'node:fs';

const ROOT = new URL('../../', import.meta.url);

export function versionLine(): string {
  const pkg = JSON.parse(readFileSync(new URL('package.json', ROOT), 'utf8')) as { version: string };
  const commit = gitCommit()?.slice(0, 12) ?? 'unknown';
  return `meterline ${pkg.version} (commit ${commit}, node ${process.version}, ${process.platform}-${process.arch})`;
}

function gitCommit(): string | undefined {
  try {
    const git = new URL('.git/', ROOT);
    const head = readFileSync(new URL('HEAD', git), 'utf8').trim();
    if (!head.startsWith('ref: ')) return head;
    const ref = head.slice(5);
    const loose = new URL(ref, git);
    if (existsSync(loose)) return readFileSync(loose, 'utf8').trim();
    const packed = readFileSync(new URL('packed-refs', git), 'utf8');
    return packed
      .split('\n')
      .find((l) => l.endsWith(` ${ref}`))
      ?.split(' ')[0];
  } catch {
    return undefined;
  }
}
