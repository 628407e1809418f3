/**
 * `reconcile aws`: our ledger against AWS's own evidence.
 *
 * - CloudTrail: the log files a trail writes to S3 (`{"Records":[…]}`, gzipped as delivered or not), the
 *   Metering Service's `BatchMeterUsage` events (and `MeterUsage`, whose CloudTrail form AWS does not
 *   document: read with the API's field names). Each usage record AWS answered is matched to the ledger by
 *   MeteringRecordId, else by customer, dimension and hour.
 * - The Daily Usage data feed (Seller Delivery Data Feeds, CSV): per day and dimension, AWS's total against
 *   the ledger's; per customer too when a map from the feed's account GUIDs to AWS account ids is given.
 *
 * Formats and what the documentation leaves open: test/fixtures/aws/README.md.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { hourIso, hourStart } from '../time/hours.ts';

export const METERING_EVENT_SOURCE = 'metering-marketplace.amazonaws.com';

/** One usage record as AWS answered it in a CloudTrail event. */
export interface TrailRecord {
  api: 'BatchMeterUsage' | 'MeterUsage';
  eventTime: string;
  productCode: string;
  /** CustomerAWSAccountId or the legacy CustomerIdentifier (MeterUsage: the calling account). */
  customer: string;
  dimension: string;
  hourMs: number;
  quantity: number;
  status: string;
  meteringRecordId?: string;
  file: string;
}

/** Our view: what the ledger says AWS accepted, by AWS identity. */
export interface AcceptedRecord {
  recordId: string;
  tenant: string;
  /** AWS identity of the tenant (undefined: no mapping known). */
  customer: string | undefined;
  dimension: string;
  hourMs: number;
  quantity: number;
  meteringRecordId: string;
}

export type AwsFinding =
  | 'missing_at_aws'
  | 'quantity_differs'
  | 'not_sent_by_us'
  | 'refused_at_aws'
  | 'unmapped_customer'
  | 'day_total_differs';

export interface AwsRow {
  finding: AwsFinding;
  customer: string;
  tenant?: string;
  dimension: string;
  /** Hour (CloudTrail) or day (usage report). */
  period: string;
  ours?: number;
  aws?: number;
  status?: string;
  meteringRecordId?: string;
  recordId?: string;
  source: string;
}

/** CloudTrail log files: paths of files or folders (searched for *.json and *.json.gz). */
export function listTrailFiles(paths: readonly string[]): string[] {
  const out: string[] = [];
  const walk = (p: string) => {
    if (statSync(p).isDirectory()) {
      for (const name of readdirSync(p).sort()) walk(join(p, name));
    } else if (/\.json(\.gz)?$/.test(p) || paths.includes(p)) {
      out.push(p);
    }
  };
  for (const p of paths) walk(p);
  return out;
}

/** A file's text, gunzipped when it starts with gzip's magic bytes (whatever its name). */
function readMaybeGzip(path: string): string {
  const bytes = readFileSync(path);
  return (bytes[0] === 0x1f && bytes[1] === 0x8b ? gunzipSync(bytes) : bytes).toString('utf8');
}

type Json = Record<string, unknown>;
const obj = (v: unknown): Json | undefined =>
  v && typeof v === 'object' && !Array.isArray(v) ? (v as Json) : undefined;
const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);

/**
 * A usage record's timestamp as CloudTrail logs it: the documented example shows
 * "Apr 19, 2018 4:32:50 PM" (no zone; read as UTC, like every CloudTrail time), ISO-8601 is taken too.
 */
export function parseTrailTimestamp(v: unknown): number | undefined {
  if (typeof v === 'number') return v < 1e12 ? v * 1000 : v;
  if (typeof v !== 'string') return undefined;
  const iso = /\d{4}-\d{2}-\d{2}T/.test(v);
  const ms = Date.parse(iso || /(Z|UTC|GMT|[+-]\d{2}:?\d{2})$/.test(v) ? v : `${v} UTC`);
  return Number.isFinite(ms) ? ms : undefined;
}

/** The Metering Service's usage records in CloudTrail log files, with AWS's answer to each. */
export function readCloudTrail(files: readonly string[]): { records: TrailRecord[]; skipped: number } {
  const records: TrailRecord[] = [];
  let skipped = 0;
  for (const file of files) {
    const doc = JSON.parse(readMaybeGzip(file)) as { Records?: unknown[] };
    for (const raw of doc.Records ?? []) {
      const e = obj(raw);
      if (!e || e.eventSource !== METERING_EVENT_SOURCE) continue;
      const eventTime = str(e.eventTime) ?? '';
      const req = obj(e.requestParameters) ?? {};
      const res = obj(e.responseElements);
      if (e.errorCode !== undefined || !res) {
        // The whole call failed (throttled, TimestampOutOfBounds …): nothing was recorded.
        skipped += 1;
        continue;
      }
      if (e.eventName === 'BatchMeterUsage') {
        const productCode = str(req.productCode) ?? '';
        for (const r of Array.isArray(res.results) ? res.results : []) {
          const result = obj(r);
          const u = obj(result?.usageRecord);
          const hour = parseTrailTimestamp(u?.timestamp);
          const customer =
            str(u?.customerAWSAccountId) ?? str(u?.customerAwsAccountId) ?? str(u?.customerIdentifier);
          if (!result || !u || hour === undefined || !customer || typeof u.quantity !== 'number') {
            skipped += 1;
            continue;
          }
          records.push({
            api: 'BatchMeterUsage',
            eventTime,
            productCode,
            customer,
            dimension: str(u.dimension) ?? '',
            hourMs: hourStart(hour),
            quantity: u.quantity,
            status: str(result.status) ?? 'unknown',
            ...(str(result.meteringRecordId)
              ? { meteringRecordId: str(result.meteringRecordId) as string }
              : {}),
            file,
          });
        }
      } else if (e.eventName === 'MeterUsage') {
        const hour = parseTrailTimestamp(req.timestamp);
        const customer = str(obj(e.userIdentity)?.accountId) ?? str(e.recipientAccountId);
        if (hour === undefined || !customer) {
          skipped += 1;
          continue;
        }
        records.push({
          api: 'MeterUsage',
          eventTime,
          productCode: str(req.productCode) ?? '',
          customer,
          dimension: str(req.usageDimension) ?? '',
          hourMs: hourStart(hour),
          quantity: typeof req.usageQuantity === 'number' ? req.usageQuantity : 0,
          status: 'Success',
          ...(str(res.meteringRecordId) ? { meteringRecordId: str(res.meteringRecordId) as string } : {}),
          file,
        });
      }
    }
  }
  return { records, skipped };
}

/**
 * Matches what AWS answered to what the ledger says it accepted, for records whose hour is in
 * [fromMs, toMs): accepted records AWS never saw, records AWS took with another quantity, records AWS
 * answered that we never sent, and records AWS refused that our ledger holds as accepted.
 */
export function matchCloudTrail(
  trail: readonly TrailRecord[],
  ours: readonly AcceptedRecord[],
  range: { fromMs: number; toMs: number },
): AwsRow[] {
  const inRange = (h: number) => h >= range.fromMs && h < range.toMs;
  const key = (customer: string, dimension: string, hourMs: number) => `${customer}|${dimension}|${hourMs}`;
  // AWS's answer per record: a Success wins over any other answer to the same record (retries).
  const byKey = new Map<string, TrailRecord>();
  const byMrid = new Map<string, TrailRecord>();
  for (const t of trail) {
    if (!inRange(t.hourMs)) continue;
    const k = key(t.customer, t.dimension, t.hourMs);
    const prev = byKey.get(k);
    if (!prev || (prev.status !== 'Success' && t.status === 'Success')) byKey.set(k, t);
    if (t.meteringRecordId && t.status === 'Success') byMrid.set(t.meteringRecordId, t);
  }
  const rows: AwsRow[] = [];
  const matched = new Set<TrailRecord>();
  for (const r of ours) {
    if (!inRange(r.hourMs)) continue;
    const period = hourIso(r.hourMs);
    if (r.customer === undefined) {
      rows.push({
        finding: 'unmapped_customer',
        customer: '',
        tenant: r.tenant,
        dimension: r.dimension,
        period,
        ours: r.quantity,
        recordId: r.recordId,
        source: 'ledger',
      });
      continue;
    }
    const t = byMrid.get(r.meteringRecordId) ?? byKey.get(key(r.customer, r.dimension, r.hourMs));
    const base = {
      customer: r.customer,
      tenant: r.tenant,
      dimension: r.dimension,
      period,
      ours: r.quantity,
      recordId: r.recordId,
      meteringRecordId: r.meteringRecordId,
    };
    if (!t) {
      rows.push({ finding: 'missing_at_aws', ...base, source: 'ledger' });
      continue;
    }
    matched.add(t);
    if (t.status !== 'Success')
      rows.push({ finding: 'refused_at_aws', ...base, aws: t.quantity, status: t.status, source: t.file });
    else if (t.quantity !== r.quantity)
      rows.push({ finding: 'quantity_differs', ...base, aws: t.quantity, status: t.status, source: t.file });
  }
  for (const t of byKey.values()) {
    if (matched.has(t) || t.status !== 'Success') continue;
    rows.push({
      finding: 'not_sent_by_us',
      customer: t.customer,
      dimension: t.dimension,
      period: hourIso(t.hourMs),
      aws: t.quantity,
      status: t.status,
      ...(t.meteringRecordId ? { meteringRecordId: t.meteringRecordId } : {}),
      source: t.file,
    });
  }
  return rows.sort((a, b) => a.period.localeCompare(b.period) || a.customer.localeCompare(b.customer));
}

/** A row of the Daily Usage data feed, the columns we read. */
export interface UsageFeedRow {
  usageDate: string;
  productId: string;
  endUserAccountId: string;
  dimension: string;
  quantity: number;
}

/** RFC 4180 CSV (the data feeds' format): quoted fields, doubled quotes, CRLF or LF. */
export function parseCsv(text: string): string[][] {
  const rows: string[][] = [];
  let row: string[] = [];
  let field = '';
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i] as string;
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') {
        field += '"';
        i++;
      } else if (c === '"') quoted = false;
      else field += c;
    } else if (c === '"') quoted = true;
    else if (c === ',') {
      row.push(field);
      field = '';
    } else if (c === '\n' || c === '\r') {
      if (c === '\r' && text[i + 1] === '\n') i++;
      row.push(field);
      rows.push(row);
      row = [];
      field = '';
    } else field += c;
  }
  if (field !== '' || row.length) {
    row.push(field);
    rows.push(row);
  }
  return rows.filter((r) => r.length > 1 || r[0] !== '');
}

const FEED_COLUMNS = ['usage_date', 'dimension_key', 'usage_quantity'] as const;

/** The Daily Usage data feed (CSV with a header row); soft-deleted rows (delete_date set) are left out. */
export function readUsageFeed(path: string): UsageFeedRow[] {
  const [head, ...rows] = parseCsv(readMaybeGzip(path));
  if (!head) return [];
  const col = new Map(head.map((h, i) => [h.trim(), i]));
  const missing = FEED_COLUMNS.filter((c) => !col.has(c));
  if (missing.length)
    throw new Error(`${path}: not a Daily Usage data feed (no column ${missing.join(', ')})`);
  const get = (r: string[], name: string) => {
    const i = col.get(name);
    return i === undefined ? '' : (r[i] ?? '');
  };
  return rows
    .filter((r) => !get(r, 'delete_date'))
    .map((r) => ({
      usageDate: get(r, 'usage_date').slice(0, 10),
      productId: get(r, 'product_id'),
      endUserAccountId: get(r, 'end_user_account_id'),
      dimension: get(r, 'dimension_key'),
      quantity: Number(get(r, 'usage_quantity')),
    }));
}

/**
 * Per UTC day and dimension, the feed's total against the ledger's; per customer as well when
 * `accountOf` maps the feed's end-user GUIDs to AWS account ids. Days outside the feed are not compared.
 */
export function matchUsageFeed(
  feed: readonly UsageFeedRow[],
  ours: readonly AcceptedRecord[],
  source: string,
  accountOf?: ReadonlyMap<string, string>,
): AwsRow[] {
  const days = new Set(feed.map((f) => f.usageDate));
  const day = (hourMs: number) => new Date(hourMs).toISOString().slice(0, 10);
  const sum = (m: Map<string, number>, k: string, q: number) => m.set(k, (m.get(k) ?? 0) + q);
  const awsTotals = new Map<string, number>();
  const ourTotals = new Map<string, number>();
  const awsByCustomer = new Map<string, number>();
  const mapped = new Set(accountOf?.values() ?? []);
  const ourByCustomer = new Map<string, number>();
  for (const f of feed) {
    sum(awsTotals, `${f.usageDate}|${f.dimension}`, f.quantity);
    const account = accountOf?.get(f.endUserAccountId);
    if (account) sum(awsByCustomer, `${f.usageDate}|${f.dimension}|${account}`, f.quantity);
  }
  for (const r of ours) {
    const d = day(r.hourMs);
    if (!days.has(d)) continue;
    sum(ourTotals, `${d}|${r.dimension}`, r.quantity);
    // Per customer only for accounts the map names: the feed's other rows cannot be told apart.
    if (mapped.has(r.customer ?? '')) sum(ourByCustomer, `${d}|${r.dimension}|${r.customer}`, r.quantity);
  }
  const rows: AwsRow[] = [];
  for (const k of new Set([...awsTotals.keys(), ...ourTotals.keys()])) {
    const [period, dimension] = k.split('|') as [string, string];
    const a = awsTotals.get(k) ?? 0;
    const o = ourTotals.get(k) ?? 0;
    if (a !== o)
      rows.push({ finding: 'day_total_differs', customer: '*', dimension, period, ours: o, aws: a, source });
  }
  if (accountOf) {
    for (const k of new Set([...awsByCustomer.keys(), ...ourByCustomer.keys()])) {
      const [period, dimension, customer] = k.split('|') as [string, string, string];
      const a = awsByCustomer.get(k) ?? 0;
      const o = ourByCustomer.get(k) ?? 0;
      if (a !== o)
        rows.push({ finding: 'day_total_differs', customer, dimension, period, ours: o, aws: a, source });
    }
  }
  return rows.sort((a, b) => a.period.localeCompare(b.period) || a.dimension.localeCompare(b.dimension));
}

/** `end_user_account_id,aws_account_id` pairs (a header row is skipped). */
export function readAccountMap(path: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const [guid, account] of parseCsv(readFileSync(path, 'utf8'))) {
    if (guid && account && /^\d{12}$/.test(account.trim())) out.set(guid.trim(), account.trim());
  }
  return out;
}
