// Small DOM helpers. Text from the API only ever goes in as text (textContent, attribute
// values): never as markup.

// h("a", {href: "#/jobs", class: "x", onclick: fn}, "text", child, [more])
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "value") el.value = value;
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

// A table: columns are [heading, row => cell]; a cell is text or an element.
export function table(columns, rows, attrs = {}) {
  return h(
    "table",
    attrs,
    h("thead", {}, h("tr", {}, columns.map(([name]) => h("th", {}, name)))),
    h("tbody", {}, rows.map((row) => h("tr", {}, columns.map(([, cell]) => h("td", {}, cell(row)))))),
  );
}

// A definition list of [term, value] pairs, skipping empty values.
export function facts(pairs) {
  const items = pairs.filter(([, v]) => v !== undefined && v !== null && v !== "");
  return h("dl", { class: "facts" }, items.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

export function time(unix) {
  if (unix === null || unix === undefined) return "";
  const seconds = typeof unix === "number" ? unix : Date.parse(unix) / 1000;
  return new Date(seconds * 1000).toLocaleString();
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined || seconds < 0) return "";
  const s = Math.round(seconds);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

export function num(value, digits = 4) {
  return typeof value === "number" ? Number(value.toPrecision(digits)).toString() : String(value ?? "");
}

export function badge(status) {
  return h("span", { class: `badge ${status}`, "data-status": status }, status);
}

export function link(href, text) {
  return h("a", { href }, text);
}

export function errorBox(err) {
  const where = err.param ? ` (${err.param})` : "";
  const hint = err.status === 401 ? " Enter an API key above." : "";
  return h("div", { class: "error", role: "alert" }, `${err.message}${where}${hint}`);
}

export function score(value) {
  const fill = h("span", { class: "fill" });
  // through the CSSOM: the policy allows no style attributes
  fill.style.width = `${(Math.max(0, Math.min(1, value)) * 100).toFixed(1)}%`;
  return h("span", { class: "score" }, h("span", { class: "bar" }, fill), ` ${value.toFixed(3)}`);
}

// Runs `fn` now and then every `ms` while `alive()` says the page is still shown.
export function every(ms, alive, fn) {
  const tick = async () => {
    if (!alive()) return;
    try {
      await fn();
    } finally {
      if (alive()) setTimeout(tick, ms);
    }
  };
  return tick();
}
