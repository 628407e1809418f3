/**
 * The operations endpoint of a meterline process: `/metrics` for Prometheus, `/healthz` (alive) and
 * `/readyz` (started, not stopping, and no check failing) for Kubernetes probes. A failing check answers
 * 503 with its reasons, one a line.
 */
import { createServer, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { ConfigError } from '../errors.ts';
import { register } from './metrics.ts';

/** A condition the probes report. Each returns the reasons it fails (none: fine). */
export interface HealthCheck {
  /** Reasons to take this process out of service for now (it may recover by itself). */
  notReady(): string[];
  /** Reasons to restart this process (Kubernetes does after the liveness probe's failure threshold). */
  notLive(): string[];
}

export interface OpsServer {
  port: number;
  setReady(ready: boolean): void;
  addCheck(check: HealthCheck): void;
  close(): Promise<void>;
}

export async function startOpsServer(port: number, host = '0.0.0.0'): Promise<OpsServer> {
  let ready = false;
  const checks: HealthCheck[] = [];
  const answer = (res: ServerResponse, ok: string, reasons: string[]) => {
    res.writeHead(reasons.length ? 503 : 200, { 'content-type': 'text/plain' });
    res.end(reasons.length ? `${reasons.join('\n')}\n` : `${ok}\n`);
  };
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
    if (path === '/healthz')
      return answer(
        res,
        'ok',
        checks.flatMap((c) => c.notLive()),
      );
    if (path === '/readyz') {
      return answer(res, 'ready', ready ? checks.flatMap((c) => c.notReady()) : ['not ready']);
    }
    res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (error: NodeJS.ErrnoException) =>
      reject(
        error.code === 'EADDRINUSE'
          ? new ConfigError('METERLINE_OPS_PORT', [
              `port ${port} is in use on this host (another meterline process?): set METERLINE_OPS_PORT to a free port, 0 for any, or off`,
            ])
          : error,
      ),
    );
    server.listen(port, host, () => resolve());
  });
  return {
    port: (server.address() as AddressInfo).port,
    setReady: (r) => {
      ready = r;
    },
    addCheck: (check) => {
      checks.push(check);
    },
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}
