/**
 * The first module main.ts loads: on a Node older than the one package.json's engines name, one line says
 * which Node to use, and the process exits 2 before anything else is loaded. (Node 20 cannot load a .ts
 * file at all: the npm bin entry, src/cli/meterline.mjs, checks the same in plain JavaScript first.)
 */
import { readFileSync } from 'node:fs';

const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
  engines: { node: string };
};
const need = Number(/\d+/.exec(pkg.engines.node)?.[0] ?? 24);
if (Number(process.versions.node.split('.')[0]) < need) {
  process.stderr.write(
    `meterline needs Node.js ${need} (package.json engines: ${pkg.engines.node}); this is Node.js ${process.version}: install Node.js ${need} (see .nvmrc), or run \`npx meterline\` in the project, which brings its own\n`,
  );
  process.exit(2);
}
