/**
 * Certificates for SNS tests, made with the openssl CLI: a test root CA (injected into the verifier through
 * its `roots` option, which no configuration key reaches), an SNS signing certificate it issued
 * (CN=sns.amazonaws.com, as AWS's are), one it issued for another name, and a self-signed SNS look-alike
 * that chains to no trusted root.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface Identity {
  key: string;
  cert: string;
}

export interface TestCa {
  /** The root's PEM: pass it as the verifier's `roots`. */
  root: string;
  /** Issued by the root, CN=sns.amazonaws.com. */
  sns: Identity;
  /** Issued by the root, CN=attacker.example. */
  otherSubject: Identity;
  /** Self-signed, CN=sns.amazonaws.com: no trusted root issued it. */
  untrusted: Identity;
  /** Issues another certificate from the root (or from `issuer`) for `cn`. */
  /** `cn` may hold more RDNs (`a/CN=b`); `aia` sets the CA Issuers URL. */
  issue(name: string, cn: string, options?: { ca?: boolean; issuer?: Identity; aia?: string }): Identity;
  dir: string;
  cleanup(): void;
}

/** A name for SimpleNotificationService-<32 alphanumerics>.pem, the form AWS's certificate URLs take. */
export function certPath(name: string): string {
  return `/SimpleNotificationService-${name
    .replace(/[^A-Za-z0-9]/g, '')
    .padEnd(32, '0')
    .slice(0, 32)}.pem`;
}

export function makeTestCa(label = 'sns-ca'): TestCa {
  const dir = mkdtempSync(join(tmpdir(), `meterline-${label}-`));
  const openssl = (args: string[]) =>
    execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
  const read = (name: string): Identity => ({
    key: readFileSync(join(dir, `${name}.key`), 'utf8'),
    cert: readFileSync(join(dir, `${name}.pem`), 'utf8'),
  });
  const selfSigned = (name: string, cn: string, ca: boolean) => {
    openssl(
      [
        'req',
        '-x509',
        '-newkey',
        'rsa:2048',
        '-nodes',
        '-keyout',
        `${name}.key`,
        '-out',
        `${name}.pem`,
      ].concat([
        '-days',
        '2',
        '-subj',
        `/CN=${cn}`,
        '-addext',
        `basicConstraints=critical,CA:${ca ? 'TRUE' : 'FALSE'}`,
      ]),
    );
    return read(name);
  };
  const rootId = selfSigned('root', 'meterline test root', true);
  let serial = 0;
  const issue = (
    name: string,
    cn: string,
    options: { ca?: boolean; issuer?: Identity; aia?: string } = {},
  ) => {
    const issuer = options.issuer ?? rootId;
    writeFileSync(join(dir, `${name}-issuer.pem`), issuer.cert);
    writeFileSync(join(dir, `${name}-issuer.key`), issuer.key);
    const aia = options.aia ? `authorityInfoAccess=caIssuers;URI:${options.aia}\n` : '';
    writeFileSync(
      join(dir, `${name}.ext`),
      `basicConstraints=critical,CA:${options.ca ? 'TRUE' : 'FALSE'}\n${aia}`,
    );
    openssl([
      'req',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-keyout',
      `${name}.key`,
      '-out',
      `${name}.csr`,
      '-subj',
      `/CN=${cn}`,
    ]);
    openssl(
      [
        'x509',
        '-req',
        '-in',
        `${name}.csr`,
        '-CA',
        `${name}-issuer.pem`,
        '-CAkey',
        `${name}-issuer.key`,
      ].concat([
        '-set_serial',
        String(++serial + 1000),
        '-days',
        '2',
        '-extfile',
        `${name}.ext`,
        '-out',
        `${name}.pem`,
      ]),
    );
    return read(name);
  };
  return {
    root: rootId.cert,
    sns: issue('sns', 'sns.amazonaws.com'),
    otherSubject: issue('other-subject', 'attacker.example'),
    untrusted: selfSigned('untrusted', 'sns.amazonaws.com', false),
    issue,
    dir,
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  };
}
