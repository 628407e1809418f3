/**
 * The Dockerfile against what the chart and the app expect of it. (Building the image needs podman and a few
 * minutes: deploy/image/build.sh does that and proves the image runs; these checks keep the files in step.)
 */
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const read = (file: string) => readFileSync(`${ROOT}${file}`, 'utf8');
const dockerfile = read('Dockerfile');
const finalStage = dockerfile.slice(dockerfile.lastIndexOf('\nFROM '));

describe('Dockerfile', () => {
  it('the entrypoint and environment are those of `npm run meterline`', () => {
    const script: string = JSON.parse(read('package.json')).scripts.meterline;
    const words = script.split(/\s+/);
    const node = words.indexOf('node');
    const entrypoint = JSON.parse(/^ENTRYPOINT (\[.*\])$/m.exec(finalStage)?.[1] ?? 'null') as string[];
    expect(entrypoint).toEqual(words.slice(node));
    // Variables the script sets before `node` (MALLOC_ARENA_MAX) are the image's ENV.
    expect(node).toBeGreaterThan(0);
    for (const assignment of words.slice(0, node)) expect(finalStage).toContain(`\nENV ${assignment}\n`);
  });

  it('runs as the non-root user the chart expects, and the roles the chart runs are meterline commands', () => {
    const user = /^USER (\d+):(\d+)$/m.exec(finalStage);
    const values = parse(read('helm/meterline/values.yaml'));
    expect(Number(user?.[1])).toBe(values.securityContext.runAsUser);
    expect(Number(user?.[2])).toBe(values.securityContext.runAsGroup);
    expect(Number(user?.[1])).toBeGreaterThan(0);
    // Each role a Deployment template passes to meterline.deployment is a subcommand of src/cli/main.ts.
    const templates = readdirSync(`${ROOT}helm/meterline/templates`).filter((f) =>
      f.endsWith('-deployment.yaml'),
    );
    const roles = templates.flatMap((f) =>
      [
        ...read(`helm/meterline/templates/${f}`).matchAll(
          /"meterline\.deployment" \(dict "root" \. "role" "(\w+)"\)/g,
        ),
      ].map((m) => m[1] as string),
    );
    expect(roles.sort()).toEqual(['console', 'processor', 'registration', 'worker']);
    const commands = read('src/cli/pipeline-commands.ts');
    for (const role of ['processor', 'worker']) expect(commands).toContain(`name: '${role}'`);
    expect(read('src/cli/registration-command.ts')).toContain(".command('registration')");
    expect(read('src/cli/console-command.ts')).toContain(".command('console')");
    for (const register of ['registerRegistrationCommand', 'registerConsoleCommand'])
      expect(read('src/cli/program.ts')).toContain(`${register}(program)`);
  });

  it('.dockerignore lets through every path the Dockerfile copies from the build context', () => {
    const allowed = read('.dockerignore')
      .split('\n')
      .filter((l) => l.startsWith('!'))
      .map((l) => l.slice(1).replace(/\/$/, ''));
    const sources = [...dockerfile.matchAll(/^COPY (?!--from)(.+) \S+$/gm)].flatMap((m) =>
      (m[1] as string).split(/\s+/).map((s) => s.replace(/\/$/, '')),
    );
    expect(sources.length).toBeGreaterThan(4);
    for (const source of sources) {
      expect(
        allowed.some((a) => source === a || source.startsWith(`${a}/`)),
        `${source} is excluded by .dockerignore`,
      ).toBe(true);
    }
    // The topics Job's script is in the image where the chart runs it from.
    expect(sources).toContain('deploy/image/create-topics.ts');
    expect(read('helm/meterline/templates/topics-job.yaml')).toContain(
      'command: [node, deploy/image/create-topics.ts]',
    );
  });
});
