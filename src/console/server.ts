/**
 * The console's HTTP server: server-rendered pages (no client framework: the pages are tables and forms,
 * and a small script adds the countdown and "select all"), assets bundled in the package, closed to anyone
 * not signed in, CSRF-checked on every POST.
 */
import { readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { ConfigError } from '../errors.ts';
import type { Logger } from '../log.ts';
import { AuditLog } from './audit.ts';
import { ConsoleAuth } from './auth.ts';
import type { Stores } from './data.ts';
import { html, type Markup, page, type Viewer } from './html.ts';
import { handleRoute } from './routes.ts';

const ASSETS: Record<string, { type: string; body: Buffer }> = Object.fromEntries(
  [
    ['console.css', 'text/css; charset=utf-8'],
    ['console.js', 'text/javascript; charset=utf-8'],
  ].map(([name, type]) => [
    `/assets/${name}`,
    { type: type as string, body: readFileSync(new URL(`./assets/${name}`, import.meta.url)) },
  ]),
);

const SECURITY_HEADERS = {
  // No inline script or style anywhere: the pages only load the console's own assets.
  'content-security-policy':
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'same-origin',
  'cache-control': 'no-store',
};

const MAX_BODY_BYTES = 256 * 1024;

export interface ConsoleRequest {
  method: string;
  path: string;
  query: URLSearchParams;
  form: URLSearchParams;
  viewer: Viewer;
}

/** What a route answers: a page, or a redirect. */
export type Answer = { status?: number; title: string; content: Markup } | { redirect: string };

export interface RunningConsole {
  port: number;
  close(): Promise<void>;
}

async function readForm(req: IncomingMessage): Promise<URLSearchParams> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > MAX_BODY_BYTES) throw Object.assign(new Error('request too large'), { status: 413 });
    chunks.push(chunk as Buffer);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

/** A POST from another site: its Origin (browsers send one on every POST) must be this host. */
function crossOrigin(req: IncomingMessage): boolean {
  const origin = req.headers.origin;
  if (!origin) return false;
  try {
    return new URL(origin).host !== req.headers.host;
  } catch {
    return true;
  }
}

export async function startConsole(
  s: Stores,
  logger: Logger,
  options: { port: number; host?: string },
): Promise<RunningConsole> {
  const auth = new ConsoleAuth(s.config.console);
  const audit = new AuditLog(s.kafka, s.config.topics.audit);
  await audit.start();

  const send = (res: ServerResponse, status: number, body: string, headers: Record<string, string> = {}) => {
    res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', ...SECURITY_HEADERS, ...headers });
    res.end(body);
  };
  const signInPage = (req: IncomingMessage, res: ServerResponse, status: number, message?: string) => {
    const secure = req.headers['x-forwarded-proto'] === 'https';
    const csrf = auth.signInCsrf(req, secure);
    const content = html`<form method="post" action="/signin" class="signin">
<input type="hidden" name="_csrf" value="${csrf.token}">
${message ? html`<p class="error-text" role="alert">${message}</p>` : ''}
<label for="token">Access token</label><input id="token" name="token" type="password" autocomplete="current-password" required>
<p><button type="submit">Sign in</button></p></form>`;
    send(
      res,
      status,
      page('Sign in', undefined, '', content),
      csrf.cookie ? { 'set-cookie': csrf.cookie } : {},
    );
  };

  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? '/', 'http://console');
    const method = req.method ?? 'GET';
    const secure = req.headers['x-forwarded-proto'] === 'https';
    const asset = ASSETS[url.pathname];
    if (asset && method === 'GET') {
      res.writeHead(200, { 'content-type': asset.type, ...SECURITY_HEADERS, 'cache-control': 'max-age=300' });
      res.end(asset.body);
      return;
    }
    if (url.pathname === '/healthz') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
      return;
    }
    if (method === 'POST' && crossOrigin(req)) return send(res, 403, 'cross-origin request refused\n');
    if (url.pathname === '/signin') {
      if (method !== 'POST') return signInPage(req, res, 200);
      const form = await readForm(req);
      if (!auth.signInCsrfValid(req, form.get('_csrf') ?? ''))
        return signInPage(req, res, 403, 'The form expired: sign in again.');
      const session = auth.signIn(form.get('token') ?? '', secure);
      if (!session) {
        logger.warn({ from: req.socket.remoteAddress }, 'console sign-in refused');
        return signInPage(req, res, 401, 'This token is not valid.');
      }
      logger.info({ user: session.name }, 'console sign-in');
      return send(res, 303, '', { location: '/', 'set-cookie': session.cookie });
    }
    const viewer = auth.viewer(req);
    if (!viewer) {
      if (method === 'GET') return send(res, 303, '', { location: '/signin' });
      return send(res, 401, 'sign in first\n');
    }
    const form = method === 'POST' ? await readForm(req) : new URLSearchParams();
    if (method === 'POST' && !auth.csrfValid(viewer, form.get('_csrf') ?? ''))
      return send(
        res,
        403,
        page(
          'Refused',
          viewer,
          '',
          html`<p role="alert">The form's CSRF token is not valid: reload the page and try again.</p>`,
        ),
      );
    if (method === 'POST' && url.pathname === '/signout')
      return send(res, 303, '', { location: '/signin', 'set-cookie': auth.signOutCookie(secure) });
    if (method !== 'GET' && method !== 'POST') return send(res, 405, 'method not allowed\n');
    const answer = await handleRoute(s, audit, {
      method,
      path: url.pathname,
      query: url.searchParams,
      form,
      viewer,
    });
    if (!answer) return send(res, 404, page('Not found', viewer, '', html`<p>No such page.</p>`));
    if ('redirect' in answer) return send(res, 303, '', { location: answer.redirect });
    const current = `/${url.pathname.split('/')[1] ?? ''}`;
    send(res, answer.status ?? 200, page(answer.title, viewer, current, answer.content));
  };

  const server: Server = createServer((req, res) => {
    handle(req, res).catch((error: Error & { status?: number }) => {
      logger.error({ err: error, path: req.url }, 'console request failed');
      if (res.headersSent) return res.end();
      send(
        res,
        error.status ?? 500,
        page('Error', undefined, '', html`<p role="alert">${error.message}</p>`),
      );
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (error: NodeJS.ErrnoException) =>
      reject(
        error.code === 'EADDRINUSE'
          ? new ConfigError('METERLINE_CONSOLE_PORT', [`port ${options.port} is in use on this host`])
          : error,
      ),
    );
    server.listen(options.port, options.host ?? '0.0.0.0', () => resolve());
  });
  return {
    port: (server.address() as AddressInfo).port,
    close: async () => {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
      await audit.stop();
    },
  };
}
