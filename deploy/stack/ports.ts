/** Free-port helpers: ports are chosen by the OS (bind to port 0) and checked before reuse. */
import net from 'node:net';

export const LOCALHOST = '127.0.0.1';

function listen(port: number, host: string): Promise<net.Server> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.once('error', reject);
    server.listen({ port, host, exclusive: true }, () => resolve(server));
  });
}

function close(server: net.Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}

/**
 * Picks `count` distinct free TCP ports on `host`. All listeners are held open until every port has been
 * chosen, so the same port is never returned twice.
 */
export async function freePorts(count: number, host = LOCALHOST): Promise<number[]> {
  const servers: net.Server[] = [];
  try {
    for (let i = 0; i < count; i++) servers.push(await listen(0, host));
    return servers.map((s) => (s.address() as net.AddressInfo).port);
  } finally {
    await Promise.all(servers.map(close));
  }
}

export async function freePort(host = LOCALHOST): Promise<number> {
  const [port] = await freePorts(1, host);
  return port as number;
}

/** True when nothing listens on `port` (we can bind it ourselves). */
export async function isPortFree(port: number, host = LOCALHOST): Promise<boolean> {
  try {
    await close(await listen(port, host));
    return true;
  } catch {
    return false;
  }
}

/**
 * Returns `previous` when every one of its ports is still free, otherwise a fresh set of ports with the same keys.
 * `reused` tells the caller which case happened (Kafka reformats its storage when the ports change).
 */
export async function reuseOrPickPorts<K extends string>(
  keys: readonly K[],
  previous: Partial<Record<K, number>> | undefined,
): Promise<{ ports: Record<K, number>; reused: boolean }> {
  if (previous && keys.every((k) => typeof previous[k] === 'number')) {
    const free = await Promise.all(keys.map((k) => isPortFree(previous[k] as number)));
    if (free.every(Boolean)) return { ports: { ...previous } as Record<K, number>, reused: true };
  }
  const picked = await freePorts(keys.length);
  const ports = {} as Record<K, number>;
  keys.forEach((k, i) => {
    ports[k] = picked[i] as number;
  });
  return { ports, reused: false };
}
