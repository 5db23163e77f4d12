// Building DOM nodes without markup strings: every text goes in through textContent,
// so channel names, user ids and publication data can never become markup.

/**
 * Creates `<tag>` with `attrs` (attributes; `text` sets textContent, `class` the class
 * list, `hidden`/`required`/... booleans) and appends `children` (nodes or strings).
 */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === 'text') node.textContent = String(value);
    else if (value === true) node.setAttribute(name, '');
    else node.setAttribute(name, String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(typeof child === 'string' ? document.createTextNode(child) : child);
  }
  return node;
}

/** A label and its input, with `id` tying them together; returns { field, input }. */
export function labelled(labelText, id, { tag = 'input', hint, ...attrs } = {}) {
  const input = el(tag, { id, name: id, ...attrs });
  const hintNode = hint ? el('span', { class: 'hint', id: `${id}-hint`, text: hint }) : null;
  if (hintNode) input.setAttribute('aria-describedby', hintNode.id);
  const field = el('div', { class: 'field' }, el('label', { for: id, text: labelText }), input, hintNode);
  return { field, input };
}

/** An empty error line (role="alert") and result line (role="status") for a form. */
export function outcomeLines(idPrefix) {
  const error = el('p', { class: 'error', role: 'alert', id: `${idPrefix}-error` });
  const status = el('p', { class: 'status', role: 'status', id: `${idPrefix}-status` });
  return {
    error,
    status,
    clear() {
      error.textContent = '';
      status.textContent = '';
    },
    fail(text) {
      status.textContent = '';
      error.textContent = text;
    },
    ok(text) {
      error.textContent = '';
      status.textContent = text;
    },
  };
}

/**
 * A table with a caption, header cells from `columns` and the given body rows; with
 * no rows, one row saying `empty` (when given).
 */
export function table(caption, columns, rows, { empty, ...attrs } = {}) {
  const head = el('tr', {}, columns.map((c) => el('th', { scope: 'col', text: c })));
  const body = rows.length || !empty ? rows : [el('tr', { class: 'empty-row' }, el('td', { colspan: columns.length, text: empty }))];
  return el(
    'table',
    attrs,
    el('caption', { text: caption }),
    el('thead', {}, head),
    el('tbody', {}, body),
  );
}

/** The page's <h2>, focusable from script so navigation can move focus to it. */
export function pageHeading(text, id) {
  return el('h2', { tabindex: '-1', id, text });
}
