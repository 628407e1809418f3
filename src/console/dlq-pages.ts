/** The dead letters: a filtered list, one entry's envelope, and the redrive's dry run and outcome. */
import type { DlqEntry, RedriveOutcome } from '../dlq/redrive.ts';
import { html, type Markup, table, type Viewer } from './html.ts';
import { recordHref } from './overview-pages.ts';

/** The list's filters, by the keys `meterline dlq list --filter` takes. */
export const DLQ_FILTERS = ['reason', 'stage', 'customer', 'hour'] as const;

export function filtersOf(query: URLSearchParams): string[] {
  return DLQ_FILTERS.flatMap((k) => {
    const v = query.get(k)?.trim();
    return v ? [`${k}=${v}`] : [];
  });
}

function what(e: DlqEntry): Markup | string {
  const r = e.envelope.record;
  if (r)
    return html`<a href="${recordHref(r.recordId)}">${r.customer} ${r.dimension} ${r.hour}</a> (${r.quantity})`;
  const s = e.envelope.source;
  return s ? `${s.topic} ${s.partition}:${s.offset}` : '';
}

const csrfField = (v: Viewer) => html`<input type="hidden" name="_csrf" value="${v.csrf}">`;

export function dlqListContent(
  all: readonly DlqEntry[],
  shown: readonly DlqEntry[],
  redriven: (e: DlqEntry) => boolean,
  query: URLSearchParams,
  viewer: Viewer,
): Markup {
  const reasons = [...new Set(all.map((e) => e.envelope.reason))].sort();
  const operator = viewer.role === 'operator';
  const filters = html`<form method="get" action="/dlq" class="filters" role="search">
<label>Reason <select name="reason"><option value="">any</option>${reasons.map(
    (r) => html`<option${r === query.get('reason') ? html` selected` : ''}>${r}</option>`,
  )}</select></label>
<label>Stage <select name="stage"><option value="">any</option>${['ingest', 'commit', 'submit'].map(
    (s) => html`<option${s === query.get('stage') ? html` selected` : ''}>${s}</option>`,
  )}</select></label>
<label>Customer <input name="customer" value="${query.get('customer') ?? ''}"></label>
<label>Hour <input name="hour" placeholder="2026-01-01T10:00:00.000Z" value="${query.get('hour') ?? ''}"></label>
<button type="submit">Filter</button></form>`;
  const rows = shown.map((e) => [
    ...(operator
      ? [
          html`<input type="checkbox" name="id" value="${e.id}" aria-label="select entry ${e.id}"${redriven(e) ? html` disabled` : ''}>`,
        ]
      : []),
    html`<a href="/dlq/entry?id=${encodeURIComponent(e.id)}" data-entry="${e.id}">${e.id}</a>`,
    e.envelope.failedAt,
    e.envelope.stage,
    e.envelope.reason,
    what(e),
    redriven(e) ? 'yes' : '',
  ]);
  const head = [...(operator ? ['select'] : []), 'entry', 'failed at', 'stage', 'reason', 'what', 'redriven'];
  const list = table(`${shown.length} of ${all.length} entries`, head, rows);
  if (!operator) return html`${filters}${list}<p class="hint">Read-only: an operator redrives entries.</p>`;
  return html`${filters}<form method="post" action="/dlq/redrive" id="redrive">${csrfField(viewer)}
<input type="hidden" name="mode" value="dry-run">${list}
<p><button type="button" data-select-all="redrive">Select all shown</button>
<button type="submit" name="action" value="dry-run" data-redrive>Dry run the redrive of the selected entries</button></p></form>`;
}

export function dlqEntryContent(entry: DlqEntry, redriven: boolean): Markup {
  const { originalBase64, ...rest } = entry.envelope;
  const original = originalBase64 ? Buffer.from(originalBase64, 'base64').toString('utf8') : null;
  return html`<p>Entry <code>${entry.id}</code>${redriven ? ' (redriven)' : ''}${
    entry.envelope.record
      ? html` · <a href="${recordHref(entry.envelope.record.recordId)}">the record's story</a>`
      : ''
  }</p>
<h2>Envelope</h2><pre tabindex="0" data-field="envelope">${JSON.stringify(rest, null, 2)}</pre>
${original === null ? '' : html`<h2>Original message</h2><pre tabindex="0">${original}</pre>`}`;
}

const VERB: Record<RedriveOutcome['kind'], string> = {
  'would-redrive': 'would be sent',
  redriven: 'sent',
  refused: 'refused',
  'already-redriven': 'already redriven',
};

export function redriveResultContent(
  results: readonly [DlqEntry, RedriveOutcome][],
  dryRun: boolean,
  viewer: Viewer,
): Markup {
  const rows = results.map(([e, r]) => [
    e.id,
    e.envelope.reason,
    what(e),
    html`<span data-outcome="${e.id}">${VERB[r.kind]}</span>`,
    r.kind === 'refused' ? r.why : 'to' in r ? `to ${r.to}` : '',
  ]);
  const sendable = results.filter(([, r]) => r.kind === 'would-redrive');
  const list = table(
    dryRun ? 'Dry run: nothing was sent' : 'Redrive done',
    ['entry', 'reason', 'what', 'outcome', 'detail'],
    rows,
  );
  if (!dryRun) return html`${list}<p><a href="/dlq">Back to the dead letters</a></p>`;
  if (!sendable.length) return html`${list}<p>Nothing to send.</p><p><a href="/dlq">Back</a></p>`;
  return html`${list}<form method="post" action="/dlq/redrive">${csrfField(viewer)}
${sendable.map(([e]) => html`<input type="hidden" name="id" value="${e.id}">`)}
<input type="hidden" name="mode" value="redrive">
<p><label><input type="checkbox" name="confirm" value="yes" required> I confirm: send these ${sendable.length} entries back</label></p>
<p><button type="submit" data-confirm-redrive>Redrive ${sendable.length} entries</button> <a href="/dlq">Cancel</a></p></form>`;
}
