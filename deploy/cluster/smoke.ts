/**
 * Phase-1 proof of the single-node cluster: up (or the given KUBECONFIG), a pod from a locally built image (a
 * slim rootfs holding this repo's Node 24 binary and its shared libraries, packed without any image tool) runs
 * to completion with the expected log, then a clean `down`. Timings are logged per step.
 *
 *   node deploy/cluster/cluster.ts smoke
 */
import { copyFileSync, existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { writeImageArchive } from './build.ts';
import { down, importImage, up } from './cluster.ts';
import { clusterPaths } from './paths.ts';
import { ClusterError, cmd, defaultLog, type Log, seconds, timed, waitFor } from './util.ts';

const REPO = path.resolve(import.meta.dirname, '..', '..');
export const NODE_IMAGE_REF = 'localhost/meterline-node-slim:24';

/**
 * A docker-archive tar of a minimal image: /bin/node (this repo's node_modules/node binary, stripped) and the
 * shared libraries `ldd` lists, /etc/passwd with root and nobody. Cached by node version in the cluster cache.
 */
export async function nodeSlimImage(log: Log = defaultLog): Promise<{ tar: string; ref: string }> {
  const node = path.join(REPO, 'node_modules', 'node', 'bin', 'node');
  if (!existsSync(node)) throw new ClusterError(`${node} is missing: run npm ci first`);
  const version = (await cmd(node, ['--version'])).stdout.trim();
  const paths = clusterPaths();
  const tar = path.join(paths.images, `node-slim-${version}.tar`);
  if (existsSync(tar)) return { tar, ref: NODE_IMAGE_REF };
  await timed(log, `node-slim image (${version})`, async () => {
    const root = path.join(paths.images, `node-slim-root.${process.pid}`);
    rmSync(root, { recursive: true, force: true });
    try {
      for (const d of ['bin', 'etc', 'tmp', 'app']) mkdirSync(path.join(root, d), { recursive: true });
      await cmd('chmod', ['1777', path.join(root, 'tmp')]);
      copyFileSync(node, path.join(root, 'bin', 'node'));
      await cmd('strip', [path.join(root, 'bin', 'node')], { check: false });
      const ldd = (await cmd('ldd', [node])).stdout;
      for (const lib of ldd.matchAll(/(\/[^\s]+\.so[^\s]*)/g)) {
        const src = lib[1] as string;
        const dst = path.join(root, src);
        mkdirSync(path.dirname(dst), { recursive: true });
        copyFileSync(src, dst); // follows symlinks
      }
      writeFileSync(
        path.join(root, 'etc', 'passwd'),
        'root:x:0:0:root:/root:/bin/node\nnobody:x:65534:65534:nobody:/nonexistent:/bin/node\n',
      );
      writeFileSync(path.join(root, 'etc', 'group'), 'root:x:0:\nnogroup:x:65534:\n');
      await writeImageArchive(
        root,
        { ref: NODE_IMAGE_REF, entrypoint: ['/bin/node'], env: ['PATH=/bin'], workingDir: '/app' },
        tar,
      );
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
  return { tar, ref: NODE_IMAGE_REF };
}

export async function smoke(log: Log = defaultLog): Promise<void> {
  const t0 = Date.now();
  const cluster = await up({ log });
  log(`node Ready (${seconds(t0)} since start)`);
  let failed: unknown;
  try {
    const kubectl = (...args: string[]) =>
      cmd(cluster.kubectl, ['--kubeconfig', cluster.kubeconfig, ...args]);
    const image = await nodeSlimImage(log);
    await timed(log, 'import image', () => importImage(image.tar, { log }));
    const pod = {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: 'meterline-smoke', namespace: 'default' },
      spec: {
        restartPolicy: 'Never',
        containers: [
          {
            name: 'node',
            image: image.ref,
            imagePullPolicy: 'Never',
            securityContext: { runAsUser: 65534 },
            command: [
              '/bin/node',
              '-e',
              "console.log('smoke ok: node ' + process.version + ' in pod ' + require('node:os').hostname())",
            ],
          },
        ],
      },
    };
    await timed(log, 'pod from the local image runs to completion', async () => {
      await kubectl('delete', 'pod', 'meterline-smoke', '--ignore-not-found', '--wait=true');
      await cmd(cluster.kubectl, ['--kubeconfig', cluster.kubeconfig, 'apply', '-f', '-'], {
        input: JSON.stringify(pod),
      });
      await waitFor(
        'pod meterline-smoke Succeeded',
        async () => {
          const phase = (await kubectl('get', 'pod', 'meterline-smoke', '-o', 'jsonpath={.status.phase}'))
            .stdout;
          if (phase === 'Failed') throw new ClusterError('pod meterline-smoke Failed');
          return phase === 'Succeeded';
        },
        {
          timeoutMs: 180_000,
          intervalMs: 500,
          detail: () => 'see `kubectl describe pod meterline-smoke`',
        },
      );
    });
    const logs = (await kubectl('logs', 'meterline-smoke')).stdout.trim();
    const ip = (await kubectl('get', 'pod', 'meterline-smoke', '-o', 'jsonpath={.status.podIP}')).stdout;
    if (!logs.startsWith('smoke ok: node v24.')) throw new ClusterError(`unexpected pod log: ${logs}`);
    log(`pod log: "${logs}" (pod IP ${ip})`);
    await kubectl('delete', 'pod', 'meterline-smoke', '--wait=true');
  } catch (err) {
    failed = err;
  }
  await timed(log, 'down', () => down({ log }));
  if (failed) throw failed;
  log(`smoke passed in ${seconds(t0)} (cluster ${cluster.external ? 'given by KUBECONFIG' : 'local'})`);
}
