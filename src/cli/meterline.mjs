#!/usr/bin/env node
/**
 * The npm bin entry (`npx meterline`). Plain JavaScript, so that any Node can run it: an older Node than
 * package.json's engines gets one line saying which Node to use, and exit 2 (Node 20 would otherwise fail on
 * main.ts with ERR_UNKNOWN_FILE_EXTENSION). src/cli/node-check.ts says the same to a Node that can load .ts.
 */
import { readFileSync } from 'node:fs';

const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8'));
const need = Number(/\d+/.exec(pkg.engines.node)?.[0] ?? 24);
if (Number(process.versions.node.split('.')[0]) < need) {
  process.stderr.write(
    `meterline needs Node.js ${need} (package.json engines: ${pkg.engines.node}); this is Node.js ${process.version}: install Node.js ${need} (see .nvmrc), or run \`npx meterline\` in the project, which brings its own\n`,
  );
  process.exit(2);
}
await import('./main.ts');
