/** The latest internal reconciliation (`meterline reconcile internal --from 48h`), computed on each visit. */
import { summarize } from '../reconcile/internal.ts';
import type { ReconcileRow } from '../reconcile/reconcile-rows.ts';
import { html, type Markup, table } from './html.ts';
import { recordHref } from './overview-pages.ts';

const num = (v: number | undefined) => (v === undefined ? '' : String(v));

export function reconcileContent(rows: readonly ReconcileRow[], fromIso: string): Markup {
  const counts = summarize(rows);
  const open = rows.filter((r) => r.status !== 'balanced');
  return html`<p>Every unit of each customer, dimension and hour since ${fromIso}, from the window to AWS, as
<code>meterline reconcile internal --from 48h</code> accounts for it.</p>
<dl class="numbers">
  <div><dt>Balanced</dt><dd data-field="balanced">${counts.balanced}</dd></div>
  <div><dt>Pending</dt><dd data-field="pending">${counts.pending}</dd></div>
  <div><dt>Unbalanced</dt><dd data-field="unbalanced">${counts.unbalanced}</dd></div>
</dl>
${table(
  'Pending and unbalanced records',
  ['record', 'frozen', 'emitted', 'accepted', 'dead-lettered', 'status', 'reasons'],
  open.map((r) => [
    html`<a href="${recordHref(r.recordId)}">${r.customer} ${r.dimension} ${r.hour}</a>`,
    num(r.frozen),
    num(r.emitted),
    num(r.accepted),
    num(r.deadLettered),
    r.status,
    r.reasons.join(', '),
  ]),
)}
<p class="hint">Against AWS's own evidence (CloudTrail, the Daily Usage feed), run <code>meterline reconcile aws</code>
with those files: the console has no access to them.</p>`;
}
