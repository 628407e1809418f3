/**
 * The operations endpoint of a meterline process: `/metrics` for Prometheus, `/healthz` (alive) and
 * `/readyz` (started and not stopping) for Kubernetes probes.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { register } from './metrics.ts';

export interface OpsServer {
  port: number;
  setReady(ready: boolean): void;
  close(): Promise<void>;
}

export async function startOpsServer(port: number, host = '0.0.0.0'): Promise<OpsServer> {
  let ready = false;
  const server: Server = createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://ops').pathname;
    if (path === '/metrics') {
      register.metrics().then(
        (text) => {
          res.writeHead(200, { 'content-type': register.contentType });
          res.end(text);
        },
        (error: unknown) => {
          res.writeHead(500, { 'content-type': 'text/plain' });
          res.end(String(error));
        },
      );
      return;
    }
    if (path === '/healthz') return void res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
    if (path === '/readyz') {
      res.writeHead(ready ? 200 : 503, { 'content-type': 'text/plain' });
      return void res.end(ready ? 'ready\n' : 'not ready\n');
    }
    res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  return {
    port: (server.address() as AddressInfo).port,
    setReady: (r) => {
      ready = r;
    },
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}
