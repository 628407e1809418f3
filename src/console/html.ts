/**
 * Server-rendered HTML: a tagged template that escapes every interpolated value unless it is already
 * markup, and the page frame every console page shares.
 */

/** Markup that was built by `html` (or is a constant of ours): inserted as it is. */
export class Markup {
  readonly text: string;
  constructor(text: string) {
    this.text = text;
  }
  toString(): string {
    return this.text;
  }
}

type Value = Markup | string | number | boolean | null | undefined | readonly Value[];

export function escapeHtml(text: string): string {
  return text.replace(
    /[&<>"']/g,
    (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c] as string,
  );
}

function render(v: Value): string {
  if (v === null || v === undefined || v === false) return '';
  if (v instanceof Markup) return v.text;
  if (Array.isArray(v)) return v.map(render).join('');
  return escapeHtml(String(v));
}

export function html(strings: TemplateStringsArray, ...values: Value[]): Markup {
  let out = strings[0] ?? '';
  values.forEach((v, i) => {
    out += render(v) + (strings[i + 1] ?? '');
  });
  return new Markup(out);
}

export interface Viewer {
  name: string;
  role: 'viewer' | 'operator';
  /** The CSRF token every form of this session posts back. */
  csrf: string;
  /** Signed in with a token (a sign-out button); false behind an identity proxy. */
  session: boolean;
}

const NAV = [
  ['/', 'Overview'],
  ['/customers', 'Customers'],
  ['/dlq', 'Dead letters'],
  ['/reconcile', 'Reconciliation'],
  ['/audit', 'Audit log'],
] as const;

/** The whole page: navigation, who is signed in, the content; the assets are served by the console. */
export function page(title: string, viewer: Viewer | undefined, current: string, content: Markup): string {
  const nav = viewer
    ? html`<nav aria-label="Main"><ul>${NAV.map(
        ([href, label]) =>
          html`<li><a href="${href}"${current === href ? html` aria-current="page"` : ''}>${label}</a></li>`,
      )}</ul>
      <p class="who">${viewer.name} (${viewer.role === 'operator' ? 'operator' : 'read-only'})${
        viewer.session
          ? html` <form method="post" action="/signout" class="inline"><input type="hidden" name="_csrf" value="${viewer.csrf}"><button type="submit">Sign out</button></form>`
          : ''
      }</p></nav>`
    : '';
  return `<!doctype html>${html`<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${title} · meterline console</title>
<link rel="stylesheet" href="/assets/console.css">
<script src="/assets/console.js" defer></script>
</head><body><header><a class="brand" href="/">meterline</a>${nav}</header>
<main id="main"><h1>${title}</h1>${content}</main></body></html>`}`;
}

/** A table with a caption (for screen readers too) and header cells. */
export function table(caption: string, head: readonly string[], rows: readonly (readonly Value[])[]): Markup {
  if (!rows.length) return html`<p class="empty">${caption}: none.</p>`;
  return html`<div class="scroll"><table><caption>${caption}</caption><thead><tr>${head.map(
    (h) => html`<th scope="col">${h}</th>`,
  )}</tr></thead><tbody>${rows.map((r) => html`<tr>${r.map((c) => html`<td>${c}</td>`)}</tr>`)}</tbody></table></div>`;
}

export const iso = (ms: number | undefined): string => (ms === undefined ? '' : new Date(ms).toISOString());
