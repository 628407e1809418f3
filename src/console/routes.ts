/** Each console page: what it reads (through ./data.ts) and how it renders. */
import { matches, REDRIVE_MARGIN_MS, redriveMany } from '../dlq/redrive.ts';
import { HOUR_MS, hourIso, hourStart } from '../time/hours.ts';
import type { AuditLog } from './audit.ts';
import {
  chainRows,
  customerChain,
  customers,
  deadLetters,
  LOOKBACK_HOURS,
  overview,
  recordStory,
  type Stores,
} from './data.ts';
import { dlqEntryContent, dlqListContent, filtersOf, redriveResultContent } from './dlq-pages.ts';
import { html, table } from './html.ts';
import { customersContent, gridContent, overviewContent } from './overview-pages.ts';
import { reconcileContent } from './reconcile-page.ts';
import { recordContent } from './record-page.ts';
import type { Answer, ConsoleRequest } from './server.ts';

/** At most this many entries in one redrive: a page's worth, answered while the operator waits. */
const MAX_REDRIVE = 500;

export async function handleRoute(
  s: Stores,
  audit: AuditLog,
  r: ConsoleRequest,
): Promise<Answer | undefined> {
  if (r.method === 'GET') {
    if (r.path === '/') return { title: 'Overview', content: overviewContent(await overview(s)) };
    if (r.path === '/customers')
      return {
        title: 'Customers',
        content: customersContent(await customers(s), r.query.get('q') ?? '', r.query.get('status') ?? ''),
      };
    if (r.path.startsWith('/customers/')) {
      const tenant = decodeURIComponent(r.path.slice('/customers/'.length));
      return { title: `Customer ${tenant}`, content: gridContent(tenant, await customerChain(s, tenant)) };
    }
    if (r.path === '/record') {
      const story = await recordStory(s, r.query.get('id') ?? '');
      if (!story)
        return {
          status: 400,
          title: 'Record',
          content: html`<p role="alert">A record id is product|customer|dimension|hour.</p>`,
        };
      return { title: 'Record', content: recordContent(story) };
    }
    if (r.path === '/dlq') {
      const { entries, redriven } = await deadLetters(s);
      const shown = entries.filter((e) => matches(e, filtersOf(r.query)));
      return { title: 'Dead letters', content: dlqListContent(entries, shown, redriven, r.query, r.viewer) };
    }
    if (r.path === '/dlq/entry') {
      const { entries, redriven } = await deadLetters(s);
      const entry = entries.find((e) => e.id === r.query.get('id'));
      if (!entry) return undefined;
      return { title: `Dead letter ${entry.id}`, content: dlqEntryContent(entry, redriven(entry)) };
    }
    if (r.path === '/reconcile') {
      const fromMs = hourStart(Date.now()) - LOOKBACK_HOURS * HOUR_MS;
      return {
        title: 'Reconciliation',
        content: reconcileContent(await chainRows(s, fromMs), hourIso(fromMs)),
      };
    }
    if (r.path === '/audit') {
      const entries = await audit.read();
      return {
        title: 'Audit log',
        content: table(
          `Redrives on ${audit.topic}, newest first`,
          ['at', 'who', 'role', 'phase', 'entries', 'outcomes'],
          entries.map((e) => [
            e.at,
            html`<span data-audit-who>${e.who}</span>`,
            e.role,
            e.phase,
            e.entries.join(' '),
            (e.outcomes ?? []).map((o) => `${o.id} ${o.kind}`).join(', '),
          ]),
        ),
      };
    }
    return undefined;
  }
  if (r.path === '/dlq/redrive') return redrivePost(s, audit, r);
  return undefined;
}

async function redrivePost(s: Stores, audit: AuditLog, r: ConsoleRequest): Promise<Answer> {
  if (r.viewer.role !== 'operator')
    return {
      status: 403,
      title: 'Refused',
      content: html`<p role="alert">Read-only: only an operator may redrive.</p>`,
    };
  const ids = new Set(r.form.getAll('id'));
  const dryRun = r.form.get('mode') !== 'redrive';
  if (!dryRun && r.form.get('confirm') !== 'yes')
    return { status: 400, title: 'Redrive', content: html`<p role="alert">Confirm the redrive first.</p>` };
  if (!ids.size || ids.size > MAX_REDRIVE)
    return {
      status: 400,
      title: 'Redrive',
      content: html`<p role="alert">Select between 1 and ${MAX_REDRIVE} entries.</p><p><a href="/dlq">Back</a></p>`,
    };
  const { entries } = await deadLetters(s);
  const chosen = entries.filter((e) => ids.has(e.id));
  const base = { at: '', who: r.viewer.name, role: r.viewer.role, action: 'redrive' as const };
  // Written before anything is sent: no redrive happens that the log does not name.
  if (!dryRun)
    await audit.write({ ...base, at: new Date().toISOString(), phase: 'requested', entries: [...ids] });
  const results = await redriveMany(chosen, {
    kafka: s.kafka,
    redis: s.redis,
    keys: s.keys,
    dlqTopic: s.config.topics.failed,
    topics: s.config.topics,
    api: s.config.worker.api,
    marginMs: REDRIVE_MARGIN_MS,
    dryRun,
  });
  if (!dryRun)
    await audit.write({
      ...base,
      at: new Date().toISOString(),
      phase: 'done',
      entries: chosen.map((e) => e.id),
      outcomes: results.map(([e, o]) => ({
        id: e.id,
        kind: o.kind,
        ...(o.kind === 'refused' ? { detail: o.why } : 'to' in o ? { detail: o.to } : {}),
      })),
    });
  return {
    title: dryRun ? 'Redrive: dry run' : 'Redrive',
    content: redriveResultContent(results, dryRun, r.viewer),
  };
}
