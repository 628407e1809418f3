/**
 * A TCP proxy in front of Redis that loses the reply of a chosen script call, the way a network does:
 * the call reaches Redis (which runs it), and its answer never reaches the client.
 *   - 'reset': the connection is cut as Redis answers (the client sees a reset and reconnects);
 *   - 'silent': the answer is swallowed and the connection stays up, mute, until the client sends
 *     something else, which is then cut too (a half-dead path that only a command timeout notices).
 */
import { createHash } from 'node:crypto';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { SCRIPTS } from '../../src/redis/client.ts';

export type LossMode = 'reset' | 'silent';

export interface RedisFaultProxy {
  /** redis:// URL of the proxy, to give the client under test. */
  readonly url: string;
  /** Replies lost so far. */
  readonly lost: number;
  /** Loses the reply of the next call of the script (at most one armed loss at a time). */
  loseNextReply(mode: LossMode): void;
  close(): Promise<void>;
}

/** The markers of a call of `script` (in src/redis/lua/): its SHA (EVALSHA) and its first line (EVAL). */
function scriptMarkers(script: keyof typeof SCRIPTS): Buffer[] {
  const source = SCRIPTS[script].lua;
  const sha = createHash('sha1').update(source).digest('hex');
  return [Buffer.from(sha), Buffer.from(source.split('\n').find((l) => l.trim().length > 4) ?? source)];
}

export async function startRedisFaultProxy(
  redisUrl: string,
  script: keyof typeof SCRIPTS,
): Promise<RedisFaultProxy> {
  const target = new URL(redisUrl);
  const markers = scriptMarkers(script);
  let armed: LossMode | undefined;
  let lost = 0;
  const sockets = new Set<Socket>();

  const server: Server = createServer((client) => {
    const upstream = connect(Number(target.port), target.hostname);
    sockets.add(client);
    sockets.add(upstream);
    // pass: forward both ways; awaiting: the marked call went up, its answer is to be lost; mute: lost.
    let state: 'pass' | 'awaiting' | 'mute' = 'pass';
    let mode: LossMode = 'reset';
    const cut = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on('data', (chunk: Buffer) => {
      if (state === 'mute') return cut();
      if (state === 'pass' && armed && markers.some((m) => chunk.includes(m))) {
        mode = armed;
        armed = undefined;
        state = 'awaiting';
      }
      upstream.write(chunk);
    });
    upstream.on('data', (chunk: Buffer) => {
      if (state === 'mute') return;
      if (state === 'awaiting') {
        lost += 1;
        if (mode === 'reset') return cut();
        state = 'mute';
        return;
      }
      client.write(chunk);
    });
    for (const s of [client, upstream]) {
      s.on('error', cut);
      s.on('close', () => {
        sockets.delete(s);
        cut();
      });
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  if (!address || typeof address === 'string') throw new Error('proxy has no port');
  const url = new URL(redisUrl);
  url.hostname = '127.0.0.1';
  url.port = String(address.port);
  return {
    url: url.toString().replace(/\/$/, ''),
    get lost() {
      return lost;
    },
    loseNextReply(mode) {
      armed = mode;
    },
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
