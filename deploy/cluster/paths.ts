/**
 * Where the single-node cluster keeps its binaries, images and run state: all outside the clone, under
 * `${XDG_CACHE_HOME:-$HOME/.cache}/meterline/k8s-1.35.4/`, so a fresh clone (CI) on the same machine stays warm.
 *
 *   src/knode/       throwaway Go module that maps the k8s.io staging modules to their published v0.35.4 tags
 *   src/etcd/        throwaway Go module with a main calling etcdmain.Main
 *   bin/             the seven binaries, installed atomically; bin/STAMP is written last
 *   images/          pause image tar (compiled from pause.c in the module cache)
 *   build.lock       held while building, so parallel callers never see a half-built binary
 *   run/             one cluster's configs, data, logs and state.json (pids, ports, saved sysctls)
 *   cluster.lock     held while `up`/`down` run
 */
import os from 'node:os';
import path from 'node:path';

export const K8S_VERSION = 'v1.35.4';
export const ETCD_VERSION = 'v3.6.5';
/** The staging modules (k8s.io/api, client-go, …) are published with this version. */
export const STAGING_VERSION = 'v0.35.4';

export const BINARIES = [
  'etcd',
  'kube-apiserver',
  'kube-controller-manager',
  'kube-scheduler',
  'kubelet',
  'kube-proxy',
  'kubectl',
] as const;
export type Binary = (typeof BINARIES)[number];

export interface ClusterPaths {
  cache: string;
  src: string;
  bin: string;
  stamp: string;
  images: string;
  pauseTar: string;
  buildLock: string;
  run: string;
  clusterLock: string;
  state: string;
  logs: string;
  adminKubeconfig: string;
  kubeletKubeconfig: string;
  containerdSock: string;
}

export function cacheRoot(env: NodeJS.ProcessEnv = process.env): string {
  const base = env.XDG_CACHE_HOME || path.join(env.HOME || os.homedir(), '.cache');
  return path.join(base, 'meterline', `k8s-${K8S_VERSION.slice(1)}`);
}

export function clusterPaths(env: NodeJS.ProcessEnv = process.env): ClusterPaths {
  const cache = cacheRoot(env);
  const run = path.join(cache, 'run');
  return {
    cache,
    src: path.join(cache, 'src'),
    bin: path.join(cache, 'bin'),
    stamp: path.join(cache, 'bin', 'STAMP'),
    images: path.join(cache, 'images'),
    pauseTar: path.join(cache, 'images', 'pause.tar'),
    buildLock: path.join(cache, 'build.lock'),
    run,
    clusterLock: path.join(cache, 'cluster.lock'),
    state: path.join(run, 'state.json'),
    logs: path.join(run, 'logs'),
    adminKubeconfig: path.join(run, 'admin.kubeconfig'),
    kubeletKubeconfig: path.join(run, 'kubelet.kubeconfig'),
    // unix socket paths are limited to 108 bytes; the run dir is short enough for the usual $HOME
    containerdSock: path.join(run, 'containerd', 'containerd.sock'),
  };
}

export function binPath(paths: ClusterPaths, name: Binary): string {
  return path.join(paths.bin, name);
}
