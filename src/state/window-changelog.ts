/**
 * The window changelog: a compacted Kafka topic that holds what Redis must never forget, the way Kafka
 * Streams backs a store with a changelog. For each partition of the usage topic (written to the same
 * partition number) it keeps:
 *
 *   `<topic>/<partition>|h|<hourMs>`  a frozen hour: the checkpoint it was frozen through, its records and
 *                                      the model state it left (written before its records are emitted)
 *   `<topic>/<partition>|e|<hourMs>`  the hour reached the submission topic
 *   `<topic>/<partition>|c|<hourMs>|<customer>`  one customer's hour closed early (the final flush after
 *                                      unsubscribe-pending): as a frozen hour, for that customer only
 *   `<topic>/<partition>|d|<hourMs>|<customer>`  that cut reached the submission topic
 *   `<topic>/<partition>|s|<field>`   the latest model state of a customer␟dimension (monthly peak,
 *                                      contract usage, carried fractions, held units) and the hour it is as
 *                                      of; an empty state is written too, never a tombstone, so a Redis that
 *                                      fell behind can tell which of its states are older
 *
 * After Redis lost a partition (or fell behind), the store rebuilds it from here before any batch
 * applies, so a replay never refreezes an hour that may have been billed, puts every late unit where it
 * went before, and applies no metering model twice. Hour keys are tombstoned a week after their hour,
 * well past any replay; model state is kept (a yearly contract's usage must outlive any retention).
 */
import type { PartitionRef } from '../redis/keys.ts';
import type { CutHour, FrozenHour, PartitionSnapshot } from './window-types.ts';

export interface ChangelogMessage {
  key: string;
  /** null: a tombstone (compaction drops the key). */
  value: string | null;
}

/** How long a frozen hour stays in the changelog: far past AWS's window and any replay. */
export const CHANGELOG_HOUR_RETENTION_MS = 8 * 24 * 3_600_000;

const prefix = (p: PartitionRef) => `${p.topic}/${p.partition}|`;

interface HourValue {
  v: 1;
  hourMs: number;
  through: string;
  records: [string, string][];
  states: [string, string, '0' | '1'][];
}

interface StateValue {
  hourMs: number;
  state: string;
  owes: boolean;
}

/**
 * A frozen hour's messages, sent in one call to one partition before its records are emitted: the model
 * state first, the hour last, so a changelog that holds the hour holds the state it left.
 */
export function frozenHourMessages(p: PartitionRef, hour: FrozenHour): ChangelogMessage[] {
  const out: ChangelogMessage[] = hour.states.map(([field, state, owes]) => ({
    key: `${prefix(p)}s|${field}`,
    value: JSON.stringify({ hourMs: hour.hourMs, state, owes } satisfies StateValue),
  }));
  const value: HourValue = {
    v: 1,
    hourMs: hour.hourMs,
    through: hour.through.toString(),
    records: hour.records,
    states: hour.states.map(([f, e, o]) => [f, e, o ? '1' : '0']),
  };
  out.push({ key: `${prefix(p)}h|${hour.hourMs}`, value: JSON.stringify(value) });
  return out;
}

/** One customer's early-closed hour: its model state, then the cut, in one send. */
export function cutMessages(p: PartitionRef, cut: CutHour): ChangelogMessage[] {
  const out = frozenHourMessages(p, cut);
  const hour = out.pop() as ChangelogMessage;
  out.push({ key: `${prefix(p)}c|${cut.hourMs}|${cut.customer}`, value: hour.value });
  return out;
}

/** The cut is on the submission topic. */
export function cutEmittedMessages(p: PartitionRef, hourMs: number, customer: string): ChangelogMessage[] {
  return [{ key: `${prefix(p)}d|${hourMs}|${customer}`, value: '1' }];
}

/** The hour is on the submission topic; the hour of a week before leaves the changelog. */
export function emittedMessages(p: PartitionRef, hourMs: number): ChangelogMessage[] {
  const old = hourMs - CHANGELOG_HOUR_RETENTION_MS;
  return [
    { key: `${prefix(p)}e|${hourMs}`, value: '1' },
    { key: `${prefix(p)}h|${old}`, value: null },
    { key: `${prefix(p)}e|${old}`, value: null },
  ];
}

/**
 * Folds a partition's changelog (in offset order; the latest value of a key wins, a tombstone deletes it)
 * into what Redis is rebuilt with. Hours before `fromHourMs` are left out (no replay reaches them).
 * Messages of other usage partitions (a changelog with fewer partitions) are ignored.
 */
export function foldChangelog(
  p: PartitionRef,
  messages: Iterable<{ key: Buffer | string | null; value: Buffer | string | null }>,
  fromHourMs: number,
): PartitionSnapshot {
  const mine = prefix(p);
  const hours = new Map<number, HourValue>();
  const emitted = new Set<number>();
  const states = new Map<string, { encoded: string; owes: boolean; hourMs: number }>();
  const cuts = new Map<string, HourValue & { customer: string }>();
  const cutsEmitted = new Set<string>();
  for (const m of messages) {
    const key = m.key?.toString();
    if (!key?.startsWith(mine)) continue;
    const rest = key.slice(mine.length);
    const kind = rest.slice(0, 2);
    const name = rest.slice(2);
    const value = m.value === null ? null : m.value.toString();
    if (kind === 's|') {
      if (value === null) {
        states.delete(name);
      } else {
        const s = JSON.parse(value) as StateValue;
        states.set(name, { encoded: s.state, owes: s.owes, hourMs: s.hourMs });
      }
    } else if (kind === 'h|') {
      const hourMs = Number(name);
      if (value === null) hours.delete(hourMs);
      else hours.set(hourMs, JSON.parse(value) as HourValue);
    } else if (kind === 'c|' || kind === 'd|') {
      const bar = name.indexOf('|');
      const id = `${Number(name.slice(0, bar))}|${name.slice(bar + 1)}`;
      if (kind === 'd|') {
        if (value === null) cutsEmitted.delete(id);
        else cutsEmitted.add(id);
      } else if (value === null) cuts.delete(id);
      else cuts.set(id, { ...(JSON.parse(value) as HourValue), customer: name.slice(bar + 1) });
    } else if (kind === 'e|') {
      const hourMs = Number(name);
      if (value === null) emitted.delete(hourMs);
      else emitted.add(hourMs);
    }
  }
  return {
    hours: [...hours.values()]
      .filter((h) => h.hourMs >= fromHourMs)
      .sort((a, b) => a.hourMs - b.hourMs)
      .map((h) => ({
        hourMs: h.hourMs,
        through: BigInt(h.through),
        records: h.records,
        states: h.states.map(([f, e, o]) => [f, e, o === '1'] as [string, string, boolean]),
        emitted: emitted.has(h.hourMs),
      })),
    cuts: [...cuts]
      .filter(([, c]) => c.hourMs >= fromHourMs)
      .sort(([, a], [, b]) => a.hourMs - b.hourMs)
      .map(([id, c]) => ({
        hourMs: c.hourMs,
        customer: c.customer,
        through: BigInt(c.through),
        records: c.records,
        states: c.states.map(([f, e, o]) => [f, e, o === '1'] as [string, string, boolean]),
        emitted: cutsEmitted.has(id),
      })),
    states,
  };
}
