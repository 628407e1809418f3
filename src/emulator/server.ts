/**
 * The emulator over HTTP: AWS's awsJson1_1 wire protocol on `POST /` (so the real SDK v3 clients can
 * talk to it through `endpoint`, `AWS_ENDPOINT_URL_MARKETPLACE_METERING` or, for GetEntitlements,
 * `AWS_ENDPOINT_URL_MARKETPLACE_ENTITLEMENT_SERVICE`), plus a small JSON admin
 * API under `/_emulator/` for tests and the CLI. All metering rules live in `state.ts`; the TPS quota
 * in `quota.ts`, rate-based faults in `faults.ts`.
 */
import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { ConfigError } from '../errors.ts';
import type { EmulatorStateOptions } from './emulator-types.ts';
import { ServiceError, serializationError } from './service-error.ts';
import { EmulatorState } from './state.ts';
import type { CustomerSubscription } from './subscriptions.ts';

/** X-Amz-Target prefix → the operations of that service (Metering, and the Entitlement Service). */
const SERVICES: ReadonlyMap<string, ReadonlySet<string>> = new Map([
  ['AWSMPMeteringService.', new Set(['BatchMeterUsage', 'MeterUsage', 'ResolveCustomer'])],
  ['AWSMPEntitlementService.', new Set(['GetEntitlements'])],
]);
const JSON_CONTENT_TYPE = 'application/x-amz-json-1.1';
/** The operations the quota, latency and rate-based faults apply to (the "metering calls" of faults.ts). */
const METERING_OPERATIONS: ReadonlySet<string> = new Set([
  'BatchMeterUsage',
  'MeterUsage',
  'GetEntitlements',
]);
/** AWS's limit is "under 1 MB" per call. */
export const MAX_BODY_BYTES = 1024 * 1024;

/** The part of a pino logger the emulator uses. */
export interface EmulatorLogger {
  info(obj: object, msg?: string): void;
  debug(obj: object, msg?: string): void;
}

export interface StartEmulatorOptions extends EmulatorStateOptions {
  /** 0 picks a free port. @defaultValue 0 */
  port?: number;
  /** @defaultValue '127.0.0.1' */
  host?: string;
  /** Bodies of this size or more are rejected with 413. @defaultValue MAX_BODY_BYTES */
  maxBodyBytes?: number;
  logger?: EmulatorLogger;
}

export interface RunningEmulator {
  url: string;
  port: number;
  state: EmulatorState;
  close(): Promise<void>;
}

type Json = Record<string, unknown>;

export async function startEmulator(options: StartEmulatorOptions = {}): Promise<RunningEmulator> {
  const { port = 0, host = '127.0.0.1', maxBodyBytes = MAX_BODY_BYTES, logger } = options;
  if (!Number.isInteger(port) || port < 0 || port > 65_535) {
    throw new RangeError(`port must be an integer from 0 to 65535 (got ${port})`);
  }
  const state = new EmulatorState(options);
  // Aborted by close(): calls held by latency or a timeout fault must not keep the server open.
  const closing = new AbortController();

  const server = createServer((req, res) => {
    handle(req, res).catch((error: unknown) => {
      // Only reachable through a bug in the emulator itself: answer like AWS would on a fault.
      logger?.info({ err: error }, 'emulator internal error');
      if (!res.headersSent) sendError(res, new ServiceError('InternalServiceErrorException', String(error)));
    });
  });

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const body = await readBody(req, maxBodyBytes);
    const path = new URL(req.url ?? '/', 'http://emulator').pathname;
    if (path.startsWith('/_emulator/')) {
      const [status, json] = admin(`${req.method} ${path}`, body);
      send(res, status, json);
      return;
    }
    if (req.method !== 'POST' || path !== '/') {
      return sendError(
        res,
        new ServiceError('UnknownOperationException', `No operation at ${req.method} ${path}`, 404),
      );
    }

    const target = header(req, 'x-amz-target') ?? '';
    const prefix = [...SERVICES.keys()].find((p) => target.startsWith(p));
    const named = prefix === undefined ? undefined : target.slice(prefix.length);
    // An operation only under its own service's target: `AWSMPMeteringService.GetEntitlements` is unknown.
    const known = prefix !== undefined && SERVICES.get(prefix)?.has(named as string) === true;
    const operation = named ?? (target || '(none)');
    state.noteCall(operation);
    const answer = (error: ServiceError) => {
      state.noteError(error.type);
      logger?.debug({ operation, error: error.type, message: error.message }, 'metering call rejected');
      sendError(res, error);
    };
    if (body === undefined) {
      return answer(
        new ServiceError(
          'RequestEntityTooLargeException',
          `Request body must be under ${maxBodyBytes} bytes`,
        ),
      );
    }
    const caller = accessKeyId(header(req, 'authorization'));
    if (caller === undefined) {
      return answer(
        new ServiceError('MissingAuthenticationTokenException', 'Missing SigV4 Authorization header'),
      );
    }

    // The quota is charged on arrival, before any added latency, so it sees the client's own pacing.
    // A client that gives up during the latency still has its call applied, as AWS would: that is
    // the ambiguous timeout its retries must survive.
    const metered = METERING_OPERATIONS.has(operation);
    const admitted = !metered || state.admit(operation);
    const latency = metered ? state.injector.latency() : 0;
    if (latency > 0 && !(await pause(latency))) return void req.socket.destroy();
    if (!admitted) return answer(new ServiceError('ThrottlingException', 'Rate exceeded'));

    // Fault seam: the one place throttling / 5xx / timeouts / slowness get injected. Hooks first, as
    // a test that scripts them means exactly that call; then the rate-based faults.
    const fault = state.faults.beforeOperation?.(operation);
    if (fault?.kind === 'hangUp') {
      req.socket.destroy();
      return;
    }
    if (fault?.kind === 'error') return answer(fault.error);
    if (fault?.kind === 'delay' && !(await pause(fault.ms))) return void req.socket.destroy();
    const injected = metered ? state.injector.pick() : undefined;
    if (injected) logger?.debug({ operation, injected }, 'metering call fault injected');
    if (injected === 'throttling') return answer(new ServiceError('ThrottlingException', 'Rate exceeded'));
    if (injected === 'internalError') {
      return answer(new ServiceError('InternalServiceErrorException', 'An internal error occurred'));
    }
    if (injected === 'timeout') {
      // Never answered: the client's own timeout fires first, or it sees the connection drop.
      await pause(state.injector.settings.timeoutMs, res);
      req.socket.destroy();
      return;
    }

    try {
      const input = parseJson(body);
      let output: unknown;
      if (known && operation === 'BatchMeterUsage') output = state.batchMeterUsage(input);
      else if (known && operation === 'MeterUsage') output = state.meterUsage(input, caller);
      else if (known && operation === 'ResolveCustomer') output = state.resolveCustomer(input);
      else if (known && operation === 'GetEntitlements') output = state.entitlements.getEntitlements(input);
      else
        throw new ServiceError(
          'UnknownOperationException',
          `Operation ${target || '(no X-Amz-Target)'} is not emulated`,
        );
      logger?.debug({ operation, caller }, 'metering call handled');
      send(res, 200, output, { 'content-type': JSON_CONTENT_TYPE });
    } catch (error) {
      if (!(error instanceof ServiceError)) throw error;
      answer(error);
    }
  }

  /** The admin API: [status, JSON body]. Not part of AWS's surface, so plain `{error}` bodies. */
  function admin(route: string, body: Buffer | undefined): [number, unknown] {
    try {
      switch (route) {
        case 'GET /_emulator/health':
          return [200, { ok: true }];
        case 'GET /_emulator/records':
          return [200, state.snapshot()];
        case 'GET /_emulator/customers':
          return [200, { customers: state.customers() }];
        case 'GET /_emulator/faults':
          return [200, state.faultSettings()];
        case 'POST /_emulator/faults':
          state.configureFaults(body === undefined ? undefined : parseJson(body));
          return [200, state.faultSettings()];
        case 'POST /_emulator/registration-tokens':
          return [200, state.issueRegistrationToken(body === undefined ? undefined : parseJson(body))];
        case 'GET /_emulator/entitlements':
          return [200, { entitlements: state.entitlements.list() }];
        case 'POST /_emulator/entitlements':
          state.entitlements.change(body === undefined ? undefined : parseJson(body));
          return [200, { entitlements: state.entitlements.list() }];
        case 'POST /_emulator/reset':
          state.reset();
          return [200, { ok: true }];
        case 'POST /_emulator/customers': {
          const { subscribe, unsubscribe } = customersChange(
            body === undefined ? undefined : parseJson(body),
          );
          state.subscribe(subscribe);
          state.unsubscribe(unsubscribe);
          return [200, { customers: state.customers() }];
        }
        default:
          return [404, { error: `no admin route ${route}` }];
      }
    } catch (error) {
      const issues = error instanceof ConfigError ? { issues: error.issues } : {};
      return [400, { error: (error as Error).message, ...issues }];
    }
  }

  /**
   * Waits `ms` unless the emulator closes or, when `res` is given, its client hangs up; `false` then.
   */
  async function pause(ms: number, res?: ServerResponse): Promise<boolean> {
    const gone = new AbortController();
    const onClose = () => gone.abort();
    res?.once('close', onClose);
    try {
      await sleep(ms, undefined, { signal: AbortSignal.any([gone.signal, closing.signal]) });
      return true;
    } catch {
      return false;
    } finally {
      res?.off('close', onClose);
    }
  }

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const actualPort = (server.address() as AddressInfo).port;
  const url = `http://${host.includes(':') ? `[${host}]` : host}:${actualPort}`;
  logger?.info({ url }, 'emulator listening');

  return {
    url,
    port: actualPort,
    state,
    close: () =>
      new Promise<void>((resolve, reject) => {
        closing.abort();
        server.close((error) => (error ? reject(error) : resolve()));
        // SDK clients keep connections alive; idle ones would hold close() open indefinitely.
        server.closeIdleConnections();
        setTimeout(() => server.closeAllConnections(), 1000).unref();
      }),
  };
}

/** Reads the whole body; `undefined` when it reaches `limit` (the rest is drained, not buffered). */
async function readBody(req: IncomingMessage, limit: number): Promise<Buffer | undefined> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size < limit) chunks.push(chunk);
  }
  return size < limit ? Buffer.concat(chunks) : undefined;
}

function parseJson(body: Buffer): unknown {
  if (body.length === 0) return {};
  try {
    return JSON.parse(body.toString('utf8'));
  } catch {
    throw serializationError('Request body is not valid JSON');
  }
}

function header(req: IncomingMessage, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

/** `AWS4-HMAC-SHA256 Credential=AKID/20261101/us-east-1/aws-marketplace/aws4_request, …` → `AKID`. */
function accessKeyId(authorization: string | undefined): string | undefined {
  if (!authorization) return undefined;
  return /Credential=([^/,\s]+)\//.exec(authorization)?.[1] ?? 'anonymous';
}

function customersChange(input: unknown): { subscribe: CustomerSubscription[]; unsubscribe: string[] } {
  const o = (typeof input === 'object' && input !== null ? input : {}) as Json;
  const subscribe = o.subscribe ?? [];
  const unsubscribe = o.unsubscribe ?? [];
  const isSub = (s: unknown) =>
    typeof s === 'string' || (typeof s === 'object' && s !== null && typeof (s as Json).id === 'string');
  if (!Array.isArray(subscribe) || !subscribe.every(isSub)) {
    throw new Error('subscribe must be a list of ids or {id, licenseArn?, productCode?} objects');
  }
  if (!Array.isArray(unsubscribe) || !unsubscribe.every((s) => typeof s === 'string')) {
    throw new Error('unsubscribe must be a list of ids');
  }
  return { subscribe: subscribe as CustomerSubscription[], unsubscribe: unsubscribe as string[] };
}

function send(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
    'x-amzn-requestid': randomUUID(),
    ...headers,
  });
  res.end(text);
}

/** AWS JSON error shape: the SDK reads `__type` first, then `x-amzn-ErrorType`; we send both. */
function sendError(res: ServerResponse, error: ServiceError): void {
  send(
    res,
    error.status,
    { __type: error.type, message: error.message },
    { 'content-type': JSON_CONTENT_TYPE, 'x-amzn-errortype': error.type },
  );
}
