// dom.js - the only way the pages build DOM.
//
// Every string that comes from the master (names, reasons, step text, log
// bytes) becomes a text node or an attribute value set through the DOM,
// never markup: nothing here assigns innerHTML, so data cannot become tags
// or scripts whatever it holds. Links are checked by safeUrl() before they
// are put into an href.

// h("a", {href: "#/x", class: "c"}, "text", child, [more]) builds an element.
// Attributes: "class", "dataset" (object), "style" (object of CSS
// properties, set through CSSOM, which the master's CSP allows), "on*"
// (event handlers), properties that exist on the element (value, checked,
// disabled, type, ...) and anything else as an attribute. Children: strings
// and numbers become text nodes; null, undefined and false are skipped;
// arrays are flattened.
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  if (attrs) {
    for (const [k, v] of Object.entries(attrs)) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") el.className = Array.isArray(v) ? v.filter(Boolean).join(" ") : v;
      else if (k === "dataset") Object.assign(el.dataset, v);
      else if (k === "style") {
        for (const [p, val] of Object.entries(v)) el.style.setProperty(p, val);
      } else if (k.startsWith("on") && typeof v === "function") {
        el.addEventListener(k.slice(2), v);
      } else if (k === "href") {
        el.setAttribute("href", safeUrl(v));
      } else if (k in el && typeof el[k] !== "function" && k !== "list") {
        el[k] = v;
      } else {
        el.setAttribute(k, v === true ? "" : String(v));
      }
    }
  }
  append(el, children);
  return el;
}

// Appends children (see h()) to el.
export function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else if (c instanceof Node) el.appendChild(c);
    else el.appendChild(document.createTextNode(String(c)));
  }
  return el;
}

// Replaces everything inside el.
export function replace(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

// A URL fit for an href: in-page hashes, relative paths, and http(s) URLs.
// Anything else (javascript:, data:, ...) becomes "#".
export function safeUrl(u) {
  const s = String(u);
  if (s.startsWith("#") || s.startsWith("api/") || s.startsWith("./")) return s;
  try {
    const url = new URL(s, document.baseURI);
    if (url.protocol === "http:" || url.protocol === "https:" || url.protocol === "blob:") return s;
  } catch {
    /* not a URL */
  }
  return "#";
}

// A table from a header row and rows of cells (each a child for h()),
// inside a box that scrolls sideways by itself when the table is wider
// than the screen (a phone), so the page never does.
export function table(headers, rows, attrs) {
  return h(
    "div",
    { class: "table-scroll" },
    h(
      "table",
      attrs || { class: "grid" },
      h("thead", null, h("tr", null, headers.map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", null, rows),
    ),
  );
}

// Runs fn at most once per `ms`: the last call in a burst wins. Used to
// refetch a page's data after a burst of live events.
export function debounce(fn, ms) {
  let timer = null;
  const d = (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      timer = null;
      fn(...args);
    }, ms);
  };
  d.cancel = () => clearTimeout(timer);
  return d;
}
