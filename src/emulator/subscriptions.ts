/**
 * The emulator's subscriptions and the licenses AWS granted: who may be metered, for which product, and
 * which LicenseArn a record may carry (the rules are listed in state.ts).
 */
import { ServiceError } from './service-error.ts';

export type CustomerType = 'account' | 'identifier' | 'caller';

/** A subscribed buyer. `licenseArn` / `productCode`, when known, must match what records carry. */
export interface CustomerSubscription {
  /** A CustomerAWSAccountId or a legacy CustomerIdentifier. */
  id: string;
  licenseArn?: string;
  productCode?: string;
}

export class EmulatedSubscriptions {
  readonly #customers = new Map<string, CustomerSubscription>();
  /**
   * Subscriptions that name their product, by `id|product`: a buyer of two products holds one each, with
   * its own license (AWS grants a license per product agreement).
   */
  readonly #byProduct = new Map<string, CustomerSubscription>();
  /** The product a license was granted for, when its subscription named it. */
  readonly #licenseProduct = new Map<string, string>();
  /** Every license granted, with the account it was granted to; an unsubscription does not erase it. */
  readonly #licenses = new Map<string, string>();
  /** Accounts by the licenses granted to them (the reverse of #licenses). */
  readonly #licensed = new Map<string, Set<string>>();

  subscribe(customers: Iterable<string | CustomerSubscription>): void {
    for (const c of customers) {
      const sub = typeof c === 'string' ? { id: c } : c;
      this.#customers.set(sub.id, sub);
      if (sub.productCode !== undefined) {
        this.#byProduct.set(`${sub.id}|${sub.productCode}`, sub);
        if (sub.licenseArn !== undefined) this.#licenseProduct.set(sub.licenseArn, sub.productCode);
      }
      if (sub.licenseArn !== undefined) {
        this.#licenses.set(sub.licenseArn, sub.id);
        const granted = this.#licensed.get(sub.id) ?? new Set<string>();
        this.#licensed.set(sub.id, granted.add(sub.licenseArn));
      }
    }
  }

  /** Ends the subscriptions of these buyers: every product's, or only `productCode`'s when given. */
  unsubscribe(ids: Iterable<string>, productCode?: string): void {
    for (const id of ids) {
      for (const [key, sub] of this.#byProduct) {
        if (sub.id === id && (productCode === undefined || sub.productCode === productCode))
          this.#byProduct.delete(key);
      }
      const current = this.#customers.get(id);
      if (productCode === undefined || current?.productCode === productCode) {
        this.#customers.delete(id);
        const other = [...this.#byProduct.values()].find((sub) => sub.id === id);
        if (other) this.#customers.set(id, other);
      }
    }
  }

  /** The licenses of a buyer's current subscriptions (every product), or undefined when none names one. */
  #currentLicenses(account: string): string[] | undefined {
    const sub = this.#customers.get(account);
    const licenses = new Set<string>();
    if (sub?.licenseArn !== undefined) licenses.add(sub.licenseArn);
    for (const s of this.#byProduct.values()) {
      if (s.id === account && s.licenseArn !== undefined) licenses.add(s.licenseArn);
    }
    return licenses.size ? [...licenses] : undefined;
  }

  customers(): CustomerSubscription[] {
    return [...this.#customers.values()];
  }

  /** InvalidLicenseException: "Ensure the LicenseArn is valid, matches the customer…" (AWS's model). */
  checkLicense(account: string, licenseArn: string, productCode: string | undefined): void {
    const owner = this.#licenses.get(licenseArn);
    const sub = this.#customers.get(account);
    // The customer's current license for the product, or (agreement ended) any license it was ever granted.
    const forProduct =
      productCode === undefined ? undefined : this.#byProduct.get(`${account}|${productCode}`);
    const perProduct = [...this.#byProduct.values()].some((s) => s.id === account);
    const known = perProduct
      ? forProduct?.licenseArn !== undefined
        ? [forProduct.licenseArn]
        : this.#licensed.get(account)
      : sub
        ? this.#currentLicenses(account)
        : this.#licensed.get(account);
    // A license is granted for one product: another product's records cannot use it.
    const licensed = this.#licenseProduct.get(licenseArn);
    if (licensed !== undefined && productCode !== undefined && licensed !== productCode) {
      throw new ServiceError(
        'InvalidLicenseException',
        `LicenseArn ${licenseArn} is a license for product ${licensed}, not ${productCode}`,
      );
    }
    if ((owner !== undefined && owner !== account) || (known && ![...known].includes(licenseArn))) {
      throw new ServiceError(
        'InvalidLicenseException',
        owner === undefined
          ? `LicenseArn ${licenseArn} is not a license granted to customer ${account}`
          : `LicenseArn ${licenseArn} does not match customer ${account}`,
      );
    }
  }

  isSubscribed(customer: string, productCode: string | undefined): boolean {
    const sub = this.#customers.get(customer);
    if (!sub) return false;
    if (productCode !== undefined && this.#byProduct.has(`${customer}|${productCode}`)) return true;
    return sub.productCode === undefined || productCode === undefined || sub.productCode === productCode;
  }
}
