/**
 * Secrets out of anything about to be logged, at any depth: values under secret-sounding keys (matched
 * case-insensitively, `_`/`-`/`.` ignored: password, secret, token, apiKey, credentials, authorization,
 * private keys …), and secrets inside strings wherever they sit (the password of `scheme://user:pw@host`,
 * query parameters such as `?token=` or `X-Amz-Signature=`, `Bearer …`, PEM private keys). Errors keep
 * their class, stack and code, with message, stack, cause and fields scrubbed.
 *
 * Nothing is mutated: what changes is copied, what does not is returned as it was (a log call with nothing
 * to hide allocates next to nothing). Cycles become `[Circular]`; past MAX_DEPTH levels or MAX_NODES values
 * the rest is cut (`[truncated]`), since what is not inspected must not be written.
 */
import { isNativeError } from 'node:util/types';

export const CENSOR = '[redacted]';
const TRUNCATED = '[truncated]';
const MAX_DEPTH = 12;
const MAX_NODES = 5_000;

/** Normalized key (lower case, no `_ - .` or spaces) names a secret. */
const SECRET_KEY =
  /password|passwd|passphrase|secret|credential|authori[sz]ation|cookie|apikey|privatekey|signingkey|hmackey|encryptionkey|masterkey|token$|signature$|^(pass|pwd|auth|sig|pfx|jwt|bearer)$/;
/** …unless it only names or locates one (`secretName`, `tokenFile`, `passwordArn`, `KAFKA_SSL_CA_FILE`). */
const NOT_A_SECRET = /(name|arn|file|path|ref|type|kind|count|length|ttl|expiry|expires|expiresat|id)$/;
/** Query parameters (after `?` or `&` only) that are credentials: `?key=` of API-key URLs, `?sig=` of SAS URLs. */
const SECRET_PARAM = /^(key|sig|code)$/;

const keyCache = new Map<string, boolean>();

/** Whether the value under this key is a secret, whatever the key's case and separators. */
export function isSecretKey(key: string): boolean {
  let secret = keyCache.get(key);
  if (secret === undefined) {
    const k = key.toLowerCase().replace(/[-_. ]/g, '');
    secret = SECRET_KEY.test(k) && !NOT_A_SECRET.test(k);
    if (keyCache.size < 2_000) keyCache.set(key, secret);
  }
  return secret;
}

/** Worth a closer look: a URL, a `name=value`, a JSON member, a private key, an Authorization value. */
const SUSPECT = /:\/\/|=|":|PRIVATE KEY|\b(?:bearer|basic)\s/i;
const PARAM = /(^|[?&;\s])([\w.~%-]+)=([^&#\s"'<>]+)/g;
const JSON_MEMBER = /"([^"\\]{1,64})"(\s*:\s*)"((?:[^"\\]|\\.)*)"/g;
const AUTH_SCHEME = /\b(bearer|basic)(\s+)([A-Za-z0-9._~+/=-]+)/gi;
const PEM_KEY = /-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|$)/g;

/** A string with the secrets it holds replaced; the same string when it holds none. */
export function redactText(s: string): string {
  if (s.length < 8 || !SUSPECT.test(s)) return s;
  let out = s.indexOf('://') >= 0 ? redactUserinfo(s) : s;
  if (out.indexOf('=') >= 0) {
    out = out.replace(PARAM, (m, lead: string, name: string) => {
      let n = name.toLowerCase();
      if (n.includes('%')) n = safeDecode(n);
      const secret = isSecretKey(n) || ((lead === '?' || lead === '&') && SECRET_PARAM.test(n));
      return secret ? `${lead}${name}=${CENSOR}` : m;
    });
  }
  if (out.indexOf('":') >= 0 || out.indexOf('" :') >= 0) {
    out = out.replace(JSON_MEMBER, (m, name: string, colon: string) =>
      isSecretKey(name) ? `"${name}"${colon}"${CENSOR}"` : m,
    );
  }
  if (out.indexOf('PRIVATE KEY') >= 0) out = out.replace(PEM_KEY, CENSOR);
  out = out.replace(AUTH_SCHEME, (m, scheme: string, space: string, credential: string) =>
    // "Basic authentication" is prose; a credential has digits, padding or JWT dots.
    credential.length >= 8 && /[0-9+/=._~-]/.test(credential) ? `${scheme}${space}${CENSOR}` : m,
  );
  return out;
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

/**
 * `scheme://user:password@host` → `scheme://user:[redacted]@host`, `scheme://token@host` → `scheme://[redacted]@host`,
 * for every URL in the string (comma-separated Redis seeds included). The authority ends at `/ ? #` or white
 * space, and its last `@` ends the user info, as URL parsers read it (so an unescaped `@` in a password is
 * still hidden). One pass, linear in the length.
 */
function redactUserinfo(s: string): string {
  let out = '';
  let last = 0;
  let i = s.indexOf('://');
  while (i >= 0) {
    const start = i + 3;
    let end = start;
    let at = -1;
    let colon = -1;
    for (; end < s.length; end++) {
      const c = s.charCodeAt(end);
      if (c === 47 /* / */ || c === 63 /* ? */ || c === 35 /* # */ || c <= 32) break;
      if (c === 64 /* @ */) at = end;
      else if (c === 58 /* : */ && colon < 0) colon = end;
    }
    if (at >= 0) {
      const keep = colon >= 0 && colon < at ? colon + 1 : start;
      out += `${s.slice(last, keep)}${CENSOR}`;
      last = at;
    }
    i = s.indexOf('://', start);
  }
  return last === 0 ? s : out + s.slice(last);
}

interface Walk {
  ancestors: object[];
  nodes: number;
}

/** The value with every secret in it replaced (see the module's comment); the same value if none. */
export function redactSecrets<T>(value: T): T {
  return walk(value, 0, { ancestors: [], nodes: 0 }) as T;
}

/** A pino `hooks.logMethod` argument list, redacted; one node budget for the whole call. */
export function redactLogArgs(args: unknown[]): unknown[] {
  const state: Walk = { ancestors: [], nodes: 0 };
  let out = args;
  for (let i = 0; i < args.length; i++) {
    const v = walk(args[i], 0, state);
    if (v !== args[i]) {
      if (out === args) out = args.slice();
      out[i] = v;
    }
  }
  return out;
}

function secretValue(v: unknown): unknown {
  return v === undefined || v === null || typeof v === 'boolean' || v === '' ? v : CENSOR;
}

function walk(v: unknown, depth: number, st: Walk): unknown {
  if (typeof v === 'string') {
    st.nodes++;
    return redactText(v);
  }
  if (typeof v !== 'object' || v === null || v instanceof Date) return v;
  if (++st.nodes > MAX_NODES || depth >= MAX_DEPTH) return TRUNCATED;
  if (st.ancestors.includes(v)) return '[Circular]';
  st.ancestors.push(v);
  try {
    if (Array.isArray(v)) return walkArray(v, depth, st);
    if (v instanceof Error || isNativeError(v)) return walkError(v as Error, depth, st);
    if (v instanceof URL) return redactText(v.href);
    if (ArrayBuffer.isView(v) || v instanceof Map || v instanceof Set) return v;
    const toJSON = (v as { toJSON?: unknown }).toJSON;
    if (typeof toJSON === 'function') {
      const json = toJSON.call(v);
      if (json !== v) return walk(json, depth, st);
    }
    return walkObject(v as Record<string, unknown>, depth, st);
  } finally {
    st.ancestors.pop();
  }
}

function walkArray(v: unknown[], depth: number, st: Walk): unknown[] {
  let out: unknown[] | undefined;
  for (let i = 0; i < v.length; i++) {
    if (st.nodes >= MAX_NODES) {
      out ??= v.slice(0, i);
      out.push(`${TRUNCATED} ${v.length - i} more`);
      return out;
    }
    const item = walk(v[i], depth + 1, st);
    if (item !== v[i] && !out) out = v.slice(0, i);
    out?.push(item);
  }
  return out ?? v;
}

function walkObject(v: Record<string, unknown>, depth: number, st: Walk): Record<string, unknown> {
  const keys = Object.keys(v);
  let out: Record<string, unknown> | undefined;
  for (let i = 0; i < keys.length; i++) {
    const key = keys[i] as string;
    if (st.nodes >= MAX_NODES) {
      out ??= copyKeys(v, keys, i);
      out[TRUNCATED] = `${keys.length - i} more keys`;
      return out;
    }
    const old = v[key];
    const value = isSecretKey(key) ? secretValue(old) : walk(old, depth + 1, st);
    if (value !== old && !out) out = copyKeys(v, keys, i);
    if (out) out[key] = value;
  }
  return out ?? v;
}

function copyKeys(v: Record<string, unknown>, keys: string[], n: number): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (let j = 0; j < n; j++) out[keys[j] as string] = v[keys[j] as string];
  return out;
}

/** A copy of the error, same prototype (so its type and `instanceof` hold), everything in it redacted. */
function walkError(e: Error, depth: number, st: Walk): Error {
  const copy = Object.create(Object.getPrototypeOf(e)) as Error;
  const hidden = (key: string, value: unknown) =>
    Object.defineProperty(copy, key, { value, writable: true, configurable: true, enumerable: false });
  hidden('message', typeof e.message === 'string' ? redactText(e.message) : e.message);
  if (typeof e.stack === 'string') hidden('stack', redactText(e.stack));
  if (Object.hasOwn(e, 'name')) hidden('name', e.name);
  if ('cause' in e) hidden('cause', walk(e.cause, depth + 1, st));
  const errors = (e as { errors?: unknown }).errors;
  if (Array.isArray(errors)) hidden('errors', walk(errors, depth + 1, st));
  const fields = walkObject(e as unknown as Record<string, unknown>, depth, st);
  for (const key of Object.keys(fields)) {
    if (key !== 'errors') (copy as unknown as Record<string, unknown>)[key] = fields[key];
  }
  return copy;
}
