/** The overview, the customers list and one customer's dimension × hour grid. */
import type { ReconcileRow } from '../reconcile/reconcile-rows.ts';
import { SUBSCRIPTION_STATUSES } from '../state/customer-directory.ts';
import type { CustomerSummary, Overview } from './data.ts';
import { html, type Markup, table } from './html.ts';

const recordHref = (id: string) => `/record?id=${encodeURIComponent(id)}`;

export function overviewContent(o: Overview): Markup {
  const s = o.status;
  const reasons = Object.entries(s.deadLetters).sort(([a], [b]) => (a < b ? -1 : 1));
  return html`
<section aria-labelledby="chain"><h2 id="chain">Records since ${o.fromIso}</h2>
<p class="hint">One record is a customer's dimension in one hour.</p>
<dl class="numbers">
  <div><dt>Closed (frozen)</dt><dd data-field="closed">${o.records.closed}</dd></div>
  <div><dt>Emitted</dt><dd data-field="emitted">${o.records.emitted}</dd></div>
  <div><dt>Accepted by AWS</dt><dd data-field="accepted">${o.records.accepted}</dd></div>
  <div><dt>Held (no AWS identity yet)</dt><dd data-field="held">${o.heldRecords}</dd></div>
  <div><dt>Dead-lettered</dt><dd data-field="deadLettered">${o.records.deadLettered}</dd></div>
  <div><dt>Pending</dt><dd data-field="pending">${o.records.pending}</dd></div>
</dl></section>
<section aria-labelledby="deadline"><h2 id="deadline">Deadline</h2>
${
  s.oldestUnsubmittedHour
    ? html`<p>Oldest unsubmitted hour <strong data-field="oldestUnsubmittedHour">${s.oldestUnsubmittedHour}</strong>:
AWS deadline <time data-field="deadline" datetime="${s.deadline ?? ''}">${s.deadline}</time>,
<span class="countdown" data-countdown="${s.deadline ?? ''}" aria-live="off">${s.hoursToDeadline} h</span> left.</p>`
    : html`<p data-field="oldestUnsubmittedHour">No hour waiting in the processor.</p>`
}</section>
<section aria-labelledby="lag"><h2 id="lag">Lag</h2>
<p>Worker lag on the submission topic: <strong data-field="workerLag">${s.workerLag}</strong></p>
${table(
  'Usage topic partitions',
  ['partition', 'lag', 'event time', 'open hours', 'oldest unsubmitted hour', 'unemitted', 'held'],
  s.partitions.map((p) => [
    html`<span data-partition="${p.partition}">${p.partition}</span>`,
    html`<span data-lag="${p.partition}">${p.lag}</span>`,
    p.eventTime,
    p.openHours,
    p.oldestOpenHour,
    p.pendingEmits,
    p.held,
  ]),
)}</section>
<section aria-labelledby="dlq"><h2 id="dlq">Dead letters by reason</h2>
${table(
  'Failed records by reason',
  ['reason', 'entries'],
  reasons.map(([r, n]) => [
    html`<a href="/dlq?reason=${encodeURIComponent(r)}">${r}</a>`,
    html`<span data-reason="${r}">${n}</span>`,
  ]),
)}</section>
<section aria-labelledby="last"><h2 id="last">Last accepted hour</h2>
${table(
  'Latest hour AWS accepted, per customer',
  ['customer', 'hour'],
  s.lastAccepted.map((c) => [
    html`<a href="/customers/${encodeURIComponent(c.customer)}" data-customer="${c.customer}">${c.customer}</a>`,
    html`<span data-last-accepted="${c.customer}">${c.hour}</span>`,
  ]),
)}</section>`;
}

export function customersContent(rows: readonly CustomerSummary[], q: string, status: string): Markup {
  const shown = rows.filter(
    (r) => (!q || r.tenant.includes(q) || r.awsId.includes(q)) && (!status || r.status === status),
  );
  return html`<form method="get" action="/customers" class="filters" role="search">
<label>Customer or AWS id <input type="search" name="q" value="${q}"></label>
<label>Status <select name="status"><option value="">any</option>${SUBSCRIPTION_STATUSES.map(
    (s) => html`<option value="${s}"${s === status ? html` selected` : ''}>${s}</option>`,
  )}</select></label>
<button type="submit">Filter</button></form>
${table(
  `${shown.length} of ${rows.length} customers`,
  ['customer', 'status', 'product', 'license', 'AWS id', 'last accepted hour', 'gaps (48 h)', 'held records'],
  shown.map((r) => [
    html`<a href="/customers/${encodeURIComponent(r.tenant)}">${r.tenant}</a>`,
    r.status,
    r.productCode,
    r.licenseArn,
    r.awsId,
    r.lastAccepted,
    r.gaps,
    r.heldRecords,
  ]),
)}`;
}

/** A record's state in the grid: the colour, and the word that says the same without colour. */
export function cellState(
  r: ReconcileRow,
): 'accepted' | 'dead-lettered' | 'pending' | 'unbalanced' | 'balanced' {
  if (r.accepted !== undefined) return 'accepted';
  if ((r.deadLettered ?? 0) > 0) return 'dead-lettered';
  return r.status;
}

export function gridContent(tenant: string, rows: readonly ReconcileRow[]): Markup {
  if (!rows.length) return html`<p class="empty">No record of ${tenant} in the last 48 hours.</p>`;
  const hours = [...new Set(rows.map((r) => r.hour))].sort();
  const dims = [...new Set(rows.map((r) => r.dimension))].sort();
  const at = new Map(rows.map((r) => [`${r.dimension}|${r.hour}`, r]));
  const states = ['accepted', 'pending', 'dead-lettered', 'unbalanced', 'balanced'];
  return html`<p class="legend">${states.map((s) => html`<span class="cell ${s}">${s}</span> `)}</p>
<div class="scroll"><table class="grid"><caption>${tenant}: records by dimension and hour (UTC)</caption>
<thead><tr><th scope="col">dimension</th>${hours.map((h) => html`<th scope="col"><time datetime="${h}">${h.slice(5, 13).replace('T', ' ')}h</time></th>`)}</tr></thead>
<tbody>${dims.map(
    (d) =>
      html`<tr><th scope="row">${d}</th>${hours.map((h) => {
        const r = at.get(`${d}|${h}`);
        if (!r) return html`<td class="none"><span class="visually-hidden">no record</span></td>`;
        const state = cellState(r);
        return html`<td class="cell ${state}" data-hour="${h}" data-dimension="${d}" data-state="${state}"><a href="${recordHref(r.recordId)}" aria-label="${d} ${h}: ${state}, ${r.accepted ?? r.frozen ?? ''}">${r.accepted ?? r.frozen ?? '·'}</a></td>`;
      })}</tr>`,
  )}</tbody></table></div>`;
}

export { recordHref };
