/**
 * The console's settings (`meterline console`): its port, who may sign in and with which role, and the
 * audit topic. Checked with the rest of the configuration; the console refuses to start open.
 */

/** Read-only: every page. Operator: also redrives. */
export type ConsoleRole = 'viewer' | 'operator';

export interface ConsoleUser {
  name: string;
  role: ConsoleRole;
  token: string;
}

export interface ConsoleSettings {
  port: number;
  /** Sign-in tokens (METERLINE_CONSOLE_TOKENS), each with its user's name and role. */
  users: ConsoleUser[];
  /** A header an authenticating proxy in front sets to the user's identity; undefined: tokens only. */
  identityHeader: string | undefined;
  /** Identities (from the header) with the operator role; everyone else the proxy lets in reads only. */
  operators: string[];
}

/** The console's own port: apart from the ops ports (9464-9466) and registration (8080). */
export const DEFAULT_CONSOLE_PORT = 9470;
export const MIN_CONSOLE_TOKEN_CHARS = 24;

/** `name:role:token` entries, comma-separated; the issues found, each naming the key. */
export function parseConsoleUsers(text: string | undefined): { users: ConsoleUser[]; issues: string[] } {
  const users: ConsoleUser[] = [];
  const issues: string[] = [];
  for (const [i, entry] of (text ?? '')
    .split(',')
    .map((e) => e.trim())
    .filter(Boolean)
    .entries()) {
    const [name, role, ...rest] = entry.split(':');
    const token = rest.join(':');
    // The entry itself holds a secret: issues name its position, never its text.
    const at = `METERLINE_CONSOLE_TOKENS: entry ${i + 1}`;
    if (!name || !/^[A-Za-z0-9._@-]{1,64}$/.test(name))
      issues.push(`${at}: the name must be 1 to 64 letters, digits or . _ @ -`);
    else if (role !== 'viewer' && role !== 'operator')
      issues.push(`${at}: the role must be viewer or operator (name:role:token)`);
    else if (token.length < MIN_CONSOLE_TOKEN_CHARS)
      issues.push(`${at}: the token must have at least ${MIN_CONSOLE_TOKEN_CHARS} characters`);
    else if (users.some((u) => u.token === token)) issues.push(`${at}: the same token as another entry`);
    else users.push({ name, role, token });
  }
  return { users, issues };
}

/** The settings, and why the console cannot start with them (it needs a way to sign in). */
export function consoleSettings(source: Record<string, string | undefined>): {
  settings: ConsoleSettings;
  issues: string[];
} {
  const { users, issues } = parseConsoleUsers(source.METERLINE_CONSOLE_TOKENS);
  const header = source.METERLINE_CONSOLE_IDENTITY_HEADER?.trim().toLowerCase() || undefined;
  if (header !== undefined && !/^[a-z0-9-]{1,64}$/.test(header))
    issues.push('METERLINE_CONSOLE_IDENTITY_HEADER: an HTTP header name, such as X-Forwarded-User');
  if (!users.length && header === undefined && !issues.length)
    issues.push(
      'METERLINE_CONSOLE_TOKENS: required (name:role:token,…), or METERLINE_CONSOLE_IDENTITY_HEADER behind an authenticating proxy: the console does not start open',
    );
  const port =
    source.METERLINE_CONSOLE_PORT === undefined
      ? DEFAULT_CONSOLE_PORT
      : Number(source.METERLINE_CONSOLE_PORT);
  if (!Number.isInteger(port) || port < 0 || port > 65_535)
    issues.push('METERLINE_CONSOLE_PORT: a port (0 = any free one)');
  const operators = (source.METERLINE_CONSOLE_OPERATORS ?? '')
    .split(',')
    .map((o) => o.trim())
    .filter(Boolean);
  return { settings: { port, users, identityHeader: header, operators }, issues };
}
