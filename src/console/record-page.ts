/** A record's story: its chain from the window to AWS, AWS's answer, and its trace as a waterfall. */
import type { TraceView } from '../cli/trace-command.ts';
import { ATTR, AWS_RECORD_EVENT } from '../observability/trace-attributes.ts';
import type { RecordStory } from './data.ts';
import { html, type Markup, table } from './html.ts';
import { cellState } from './overview-pages.ts';

const num = (v: number | undefined) => (v === undefined ? '—' : String(v));

export function recordContent(story: RecordStory): Markup {
  const r = story.row;
  const chain: [string, string][] = r
    ? [
        ['Carried in (late events of earlier hours)', num(r.carriedIn ?? (r.lateEventsIn || undefined))],
        ['Carried out (late events to a later hour)', num(r.carriedOut ?? (r.lateEventsOut || undefined))],
        ['Fraction carried from the previous hour', num(r.remainderIn)],
        ['Fraction carried to the next hour', num(r.remainderOut)],
        ['Held back (above AWS per-record limit)', num(r.held)],
        ['Frozen quantity (the window sum as billed)', num(r.frozen)],
        ['Emitted to the submission topic', num(r.emitted)],
        ['Accepted by AWS', num(r.accepted)],
        ['Dead-lettered', num(r.deadLettered)],
        ['Redriven', num(r.redriven)],
      ]
    : [];
  return html`<p class="record-id"><code>${story.recordId}</code></p>
<section aria-labelledby="chain"><h2 id="chain">Chain</h2>
${
  r
    ? html`<p>State: <span class="cell ${cellState(r)}" data-field="state">${cellState(r)}</span> (${r.status}${
        r.reasons.length ? `: ${r.reasons.join(', ')}` : ''
      })</p><dl class="chain">${chain.map(([k, v]) => html`<div><dt>${k}</dt><dd>${v}</dd></div>`)}</dl>`
    : html`<p class="empty">No trace of this record in the window changelog, the submission topic or the ledger.</p>`
}</section>
<section aria-labelledby="aws"><h2 id="aws">AWS's answer</h2>${awsAnswer(story)}</section>
<section aria-labelledby="trace"><h2 id="trace">Trace</h2>${waterfall(story.trace, story.traceError)}</section>
${
  story.deadLetters.length
    ? html`<section aria-labelledby="dead"><h2 id="dead">Dead letters of this record</h2>${table(
        'Failed-records entries',
        ['entry', 'failed at', 'stage', 'reason'],
        story.deadLetters.map((e) => [
          html`<a href="/dlq/entry?id=${encodeURIComponent(e.id)}">${e.id}</a>`,
          e.envelope.failedAt,
          e.envelope.stage,
          e.envelope.reason,
        ]),
      )}</section>`
    : ''
}`;
}

/** The ledger's entry, and each AWS call of the trace with AWS's answer for this record. */
function awsAnswer(story: RecordStory): Markup {
  // One CLIENT span per AWS call; AWS's answer for each of its records is an event on it (the view keeps
  // only this record's).
  const calls = (story.trace?.spans ?? []).filter(
    (s) => s.attributes[ATTR.rpcMethod] !== undefined || s.events?.some((e) => e.name === AWS_RECORD_EVENT),
  );
  const ledger = story.ledger
    ? html`<p data-field="aws-answer">Accepted: metering record id <code data-field="metering-record-id">${story.ledger.meteringRecordId}</code>, quantity ${story.ledger.quantity}, at ${story.ledger.acceptedAt}.</p>`
    : html`<p data-field="aws-answer">Not accepted by AWS (no ledger entry).</p>`;
  return html`${ledger}${table(
    'AWS calls in the trace',
    ['call', 'attempt', 'status', 'metering record id', 'duration'],
    calls.map((s) => {
      const answer = s.events?.find((e) => e.name === AWS_RECORD_EVENT)?.attributes ?? {};
      return [
        s.name,
        String(s.attributes[ATTR.awsAttempt] ?? ''),
        answer[ATTR.awsStatus] === undefined
          ? ''
          : html`<span data-aws-status>${String(answer[ATTR.awsStatus])}</span>`,
        String(answer[ATTR.meteringRecordId] ?? ''),
        `${s.durationMs.toFixed(1)} ms`,
      ];
    }),
  )}`;
}

/** Spans as rows; each bar an SVG rect (no inline style: the console's CSP forbids it). */
function waterfall(trace: TraceView | undefined, error: string | undefined): Markup {
  if (!trace)
    return html`<p class="empty">${error ? `Jaeger could not be asked: ${error}` : 'No trace of this record in Jaeger.'}</p>`;
  const total = Math.max(1, ...trace.spans.map((s) => s.startOffsetMs + s.durationMs));
  const rows = trace.spans.map((s) => {
    const x = (s.startOffsetMs / total) * 1000;
    const w = Math.max(2, (s.durationMs / total) * 1000);
    const attrs = Object.entries(s.attributes)
      .map(([k, v]) => `${k}=${v}`)
      .join(' ');
    return html`<tr class="span${s.error ? ' error' : ''}" data-span="${s.name}">
<th scope="row" class="depth-${Math.min(s.depth, 6)}">${s.service}: ${s.name}<small>${attrs}</small></th>
<td><svg class="bar" viewBox="0 0 1000 12" preserveAspectRatio="none" role="img" aria-label="starts at ${s.startOffsetMs.toFixed(1)} ms, lasts ${s.durationMs.toFixed(1)} ms"><rect x="${x.toFixed(1)}" y="0" width="${Math.min(w, 1000 - x).toFixed(1)}" height="12"></rect></svg></td>
<td>${s.durationMs.toFixed(1)} ms</td><td>${s.error ? 'error' : 'ok'}</td></tr>`;
  });
  return html`<div class="scroll"><table class="waterfall"><caption>Trace ${trace.traceId}: ${trace.spans.length} spans, ${total.toFixed(1)} ms</caption>
<thead><tr><th scope="col">span</th><th scope="col">timeline</th><th scope="col">duration</th><th scope="col">status</th></tr></thead>
<tbody>${rows}</tbody></table></div>
${trace.otherRecords ? html`<p class="hint">${trace.otherRecords} more record(s) of this hour share the finalize span.</p>` : ''}
${
  trace.producers.length
    ? table(
        'Producer spans behind the links (a sample of the hour’s events)',
        ['service', 'span', 'trace', 'attributes'],
        trace.producers.map((p) => [
          p.service,
          p.name,
          p.traceId,
          Object.entries(p.attributes)
            .map(([k, v]) => `${k}=${v}`)
            .join(' '),
        ]),
      )
    : ''
}`;
}
