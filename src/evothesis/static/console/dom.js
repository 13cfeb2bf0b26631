// Building the console's pages: elements from data (text only, never HTML strings, so no
// stored value can become markup), tables, status messages and formatting.

/** An element with attributes, handlers (`onclick: fn`) and children (strings become
 * text nodes; null, undefined and false are skipped; arrays are flattened). */
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      node.addEventListener(name.slice(2), value);
    } else if (name === "class") {
      node.className = value;
    } else if (name === "text") {
      node.textContent = value;
    } else if (name === "value" && "value" in node) {
      // The attribute too, so that a form's reset() comes back to it.
      if (tag === "input") node.setAttribute("value", value);
      node.value = value;
    } else if (name === "checked" || name === "selected") {
      node.setAttribute(name, "");
      node[name] = true;
    } else {
      node.setAttribute(name, value === true ? "" : String(value));
    }
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(node, child);
    else node.append(child instanceof Node ? child : String(child));
  }
}

export function clear(node) {
  node.replaceChildren();
  return node;
}

let ids = 0;
/** A document-unique id for labels and descriptions. */
export function uid(prefix) {
  ids += 1;
  return `${prefix}-${ids}`;
}

/** A labelled control with its help text tied to it (aria-describedby). */
export function field(label, control, help) {
  const id = control.id || uid("field");
  control.id = id;
  const parts = [];
  let helpNode = null;
  if (help) {
    helpNode = el("p", { class: "help", id: `${id}-help` }, help);
    const described = control.getAttribute("aria-describedby");
    control.setAttribute("aria-describedby", described ? `${described} ${helpNode.id}` : helpNode.id);
  }
  if (control.type === "checkbox") {
    parts.push(el("div", { class: "check" }, control, el("label", { for: id }, label)));
  } else {
    parts.push(el("label", { for: id }, label), control);
  }
  return el("div", { class: "field" }, parts, helpNode);
}

/** A region that announces what an action did (polite) or why it failed (assertive). */
export function messages() {
  const node = el("div", { class: "messages", role: "status", "aria-live": "polite" });
  node.show = (kind, ...content) => {
    clear(node);
    if (kind === "error") {
      node.append(el("div", { class: "message error", role: "alert" }, content));
    } else {
      node.append(el("div", { class: `message ${kind}` }, content));
    }
  };
  node.clearMessage = () => clear(node);
  return node;
}

/** A table with a caption; columns are {label, cell(row) -> node or text, numeric}. */
export function table({ caption, columns, rows, empty, rowKey }) {
  if (!rows.length) {
    return el("p", { class: "empty" }, empty || "Nothing to show.");
  }
  const head = el("tr", {}, columns.map((c) => el("th", { scope: "col", class: c.numeric ? "numeric" : null }, c.label)));
  const body = rows.map((row) =>
    el(
      "tr",
      { "data-key": rowKey ? rowKey(row) : null },
      columns.map((c, index) => {
        const content = c.cell(row);
        const attributes = { class: c.numeric ? "numeric" : null };
        return index === 0 && c.header !== false
          ? el("th", { scope: "row", ...attributes }, content)
          : el("td", attributes, content);
      }),
    ),
  );
  return el(
    "div",
    { class: "table-wrap", tabindex: "0", role: "region", "aria-label": caption },
    el("table", {}, el("caption", {}, caption), el("thead", {}, head), el("tbody", {}, body)),
  );
}

/** A section of a page with its heading. */
export function section(title, ...children) {
  const id = uid("section");
  return el("section", { "aria-labelledby": id }, el("h2", { id }, title), children);
}

/** Terms and their values, for summaries. */
export function facts(pairs) {
  return el(
    "dl",
    { class: "facts" },
    pairs.map(([term, value]) => el("div", {}, el("dt", {}, term), el("dd", {}, value))),
  );
}

/** A short state label: its words say it, the colour only repeats it. */
export function badge(kind, text) {
  return el("span", { class: `badge ${kind}` }, text);
}

/** JSON as stored, for a <details> disclosure. */
export function details(summary, value) {
  return el(
    "details",
    {},
    el("summary", {}, summary),
    el("pre", { class: "json" }, JSON.stringify(value, null, 2)),
  );
}

const numbers = new Intl.NumberFormat("en");
export function number(value) {
  return value === null || value === undefined ? "—" : numbers.format(value);
}

/** A moment as UTC, to the second: server times are UTC and so is every bucket's path. */
export function moment(iso) {
  if (!iso) return "—";
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return String(iso);
  return `${date.toISOString().slice(0, 19).replace("T", " ")} UTC`;
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  if (seconds < 90) return `${Math.round(seconds)} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

export function bytes(value) {
  if (value === null || value === undefined) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let size = value;
  let unit = 0;
  while (size >= 1024 && unit < units.length - 1) {
    size /= 1024;
    unit += 1;
  }
  return unit ? `${size.toFixed(1)} ${units[unit]}` : `${size} B`;
}

/** A button that copies text to the clipboard and says so; falls back to selecting the
 * text and the browser's copy command where the Clipboard API is unavailable (a console
 * served over plain HTTP from another host than localhost). */
export function copyButton(source, what, status) {
  return el(
    "button",
    {
      type: "button",
      class: "secondary",
      onclick: async () => {
        const text = source.value ?? source.textContent;
        try {
          await navigator.clipboard.writeText(text);
        } catch {
          source.focus();
          source.select?.();
          document.execCommand("copy");
        }
        status.show("success", `${what[0].toUpperCase()}${what.slice(1)} copied to the clipboard.`);
      },
    },
    `Copy ${what}`,
  );
}

/** Re-run `work` every `seconds` while the page is visible; returns a stop function. */
export function every(seconds, work) {
  let timer = null;
  let stopped = false;
  const tick = async () => {
    if (stopped) return;
    if (!document.hidden) {
      try {
        await work();
      } catch (error) {
        console.error(error);
      }
    }
    if (!stopped) timer = setTimeout(tick, seconds * 1000);
  };
  timer = setTimeout(tick, seconds * 1000);
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
