/**
 * Keys that come from outside (tenants in the customers file, contract dimensions, SNS actions, admin API
 * fields) named like Object.prototype members are keys like any other: never dropped, never
 * answered by Object.prototype.
 */
import { describe, expect, it } from 'vitest';
import { customersObject, parseCustomers } from '../../../src/config/customers.ts';
import { subscriptionsFromMapping } from '../../../src/emulator/customers-file.ts';
import { NO_FAULTS, parseFaultUpdate } from '../../../src/emulator/faults.ts';
import { ConfigError } from '../../../src/errors.ts';
import { parseSnsAction } from '../../../src/subscribe/lifecycle-events.ts';

/** The key itself, as data (the linter rightly flags `.__proto__` as the accessor). */
const PROTO = '__proto__';
const account = (i: number) => ({
  customerAwsAccountId: String(620_000_000_000 + i),
  licenseArn: `arn:aws:license-manager::${620_000_000_000 + i}:license:l-${i}`,
});
// As a customers file reads: JSON.parse makes `__proto__` an own key.
const file = JSON.parse(
  JSON.stringify({ constructor: account(1), hasOwnProperty: account(2), acme: account(3) }).replace(
    '{',
    `{"__proto__": ${JSON.stringify(account(0))},`,
  ),
);

describe('the customers file', () => {
  it('keeps tenants named __proto__, constructor and hasOwnProperty, and finds no other', () => {
    expect(Object.keys(file)).toEqual(['__proto__', 'constructor', 'hasOwnProperty', 'acme']);
    const customers = parseCustomers(file);
    expect([...customers.keys()]).toEqual(['__proto__', 'constructor', 'hasOwnProperty', 'acme']);
    expect(customers.get('__proto__')).toEqual(account(0));
    expect(customers.get('hasOwnProperty')).toEqual(account(2));
    expect(customers.get('toString')).toBeUndefined();
    // The indexable view answers the same, and nothing inherited.
    const view = customersObject(customers);
    expect(view[PROTO]).toEqual(account(0));
    expect(view.constructor).toEqual(account(1));
    expect(view.toString).toBeUndefined();
    expect(Object.keys(view)).toEqual(['__proto__', 'constructor', 'hasOwnProperty', 'acme']);
  });

  it('checks a __proto__ entry like any other', () => {
    const bad = JSON.parse('{"__proto__": {"customerAwsAccountId": "12345"}}');
    expect(() => parseCustomers(bad)).toThrow(ConfigError);
    try {
      parseCustomers(bad);
    } catch (error) {
      expect((error as ConfigError).issues.join('\n')).toContain('__proto__');
    }
  });

  it('keeps a contract entitlement for a dimension named __proto__, and invents none for constructor', () => {
    const raw = JSON.parse(
      `{"t": {"customerIdentifier": "c", "contract": {"start": "2026-01-01T00:00:00Z", "entitlements": {"__proto__": 5, "seats": 2}}}}`,
    );
    const entitlements = parseCustomers(raw).get('t')?.contract?.entitlements;
    expect(entitlements?.[PROTO]).toBe(5);
    expect(entitlements?.seats).toBe(2);
    expect(entitlements?.constructor).toBeUndefined();
    expect(() =>
      parseCustomers(
        JSON.parse(
          `{"t": {"customerIdentifier": "c", "contract": {"start": "2026-01-01T00:00:00Z", "entitlements": {"__proto__": -1}}}}`,
        ),
      ),
    ).toThrow(ConfigError);
  });

  it('subscribes every tenant of the file in the emulator, __proto__ included', () => {
    expect(subscriptionsFromMapping(file).map((s) => s.id)).toEqual(
      [0, 1, 2, 3].map((i) => account(i).customerAwsAccountId),
    );
  });
});

describe('other keys from outside', () => {
  it('ignores an SNS action named constructor', () => {
    const message = JSON.stringify({
      action: 'constructor',
      'customer-identifier': 'c',
      'product-code': 'p',
    });
    expect(parseSnsAction(message, new Date().toISOString())).toEqual({ ignored: 'constructor' });
  });

  it('refuses fault settings named constructor or __proto__ as unknown keys', () => {
    for (const body of ['{"constructor": 1}', '{"__proto__": 1}']) {
      expect(() => parseFaultUpdate(JSON.parse(body), NO_FAULTS)).toThrow(/is not a fault setting/);
    }
  });
});
