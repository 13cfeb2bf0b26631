// Client settings forms built from the admin API's own request models (their JSON
// schemas, sent with the page): a setting added to the API appears here with its label,
// help and choices, and the form sends exactly the fields the API takes.

import { el, field, uid } from "./dom.js";

export class FormError extends Error {}

function resolve(schema, node) {
  if (node?.$ref) return resolve(schema, schema.$defs[node.$ref.split("/").pop()]);
  return node;
}

/** The property's own shape, whether it may be null, and which control shows it. */
function describe(schema, property) {
  let shape = property;
  let nullable = false;
  if (property.anyOf) {
    const variants = property.anyOf.filter((variant) => variant.type !== "null");
    nullable = variants.length < property.anyOf.length;
    shape = variants.length === 1 ? variants[0] : { anyOf: variants };
  }
  shape = resolve(schema, shape);
  let kind = "json";
  if (Array.isArray(shape.enum)) kind = "choice";
  else if (shape.type === "boolean") kind = "flag";
  else if (shape.type === "string") kind = "text";
  else if (shape.type === "integer" || shape.type === "number") kind = "number";
  else if (shape.type === "array" && resolve(schema, shape.items)?.type === "string") kind = "lines";
  else if (shape.type === "object" && resolve(schema, shape.additionalProperties)?.type === "string")
    kind = "pairs";
  return { shape, nullable, kind, writeOnly: Boolean(property.writeOnly) };
}

function pairsText(value) {
  return Object.entries(value || {})
    .map(([key, item]) => `${key}=${item}`)
    .join("\n");
}

function parsePairs(text, label) {
  const result = {};
  for (const line of text.split("\n").map((item) => item.trim()).filter(Boolean)) {
    const at = line.indexOf("=");
    if (at < 1) throw new FormError(`${label}: "${line}" is not key=value`);
    result[line.slice(0, at).trim()] = line.slice(at + 1).trim();
  }
  return result;
}

function control(kind, shape, id, value, required) {
  switch (kind) {
    case "choice":
      return el(
        "select",
        { id, required },
        shape.enum.map((choice) => el("option", { value: choice, selected: choice === value }, choice)),
      );
    case "flag":
      return el("input", { id, type: "checkbox", checked: Boolean(value) });
    case "number":
      return el("input", { id, type: "number", value: value ?? "", required, min: shape.minimum, max: shape.maximum });
    case "text":
      return el("input", {
        id,
        type: "text",
        value: value ?? "",
        required,
        maxlength: shape.maxLength,
        pattern: shape.pattern ? shape.pattern.replace(/^\^|\$$/g, "") : null,
        autocomplete: "off",
        spellcheck: "false",
      });
    case "lines":
      return el("textarea", { id, rows: 3, spellcheck: "false" }, (value || []).join("\n"));
    case "pairs":
      return el("textarea", { id, rows: 3, spellcheck: "false" }, pairsText(value));
    default:
      return el("textarea", { id, rows: 3, spellcheck: "false" }, value === undefined || value === null ? "" : JSON.stringify(value));
  }
}

function read(kind, input, label) {
  switch (kind) {
    case "flag":
      return input.checked;
    case "number":
      return input.value === "" ? null : Number(input.value);
    case "lines":
      return input.value.split("\n").map((line) => line.trim()).filter(Boolean);
    case "pairs":
      return input.value.trim() ? parsePairs(input.value, label) : null;
    case "json":
      if (!input.value.trim()) return null;
      try {
        return JSON.parse(input.value);
      } catch {
        throw new FormError(`${label}: not valid JSON`);
      }
    default:
      return input.value.trim() === "" ? null : input.value.trim();
  }
}

const same = (a, b) => JSON.stringify(a ?? null) === JSON.stringify(b ?? null);

const HINTS = {
  lines: "One per line.",
  pairs: "One key=value per line.",
  json: "JSON.",
};

/**
 * Fields for every property of `schema` but `omit`.
 * mode "create": every field the user filled is sent; "change": only what differs from
 * `record` (write-only secrets: only when a new value is typed, or removal is asked for).
 * Returns {element, values()}; values() throws FormError on input it cannot read.
 */
export function settingsForm(schema, { mode, record = {}, omit = [] }) {
  const required = new Set(schema.required || []);
  const entries = [];
  const nodes = [];
  for (const [name, property] of Object.entries(schema.properties)) {
    if (omit.includes(name)) continue;
    const { shape, nullable, kind, writeOnly } = describe(schema, property);
    const label = property.title || name;
    const current = writeOnly ? undefined : record[name] ?? (mode === "create" ? property.default : undefined);
    const id = uid(`setting-${name}`);
    const input = control(kind, shape, id, current, mode === "create" && required.has(name));
    input.name = name;
    const help = [property.description, HINTS[kind]];
    let removal = null;
    if (writeOnly && mode === "change") {
      const stored = record[`has_${name}`];
      help.push(stored === false ? "None stored." : "Leave empty to keep what is stored.");
      if (nullable && stored) {
        removal = el("input", { type: "checkbox", id: `${id}-remove` });
      }
    }
    nodes.push(field(label, input, help.filter(Boolean).join(" ")));
    if (removal) nodes.push(field(`Remove the stored ${label.toLowerCase()}`, removal));
    entries.push({ name, kind, input, label, nullable, writeOnly, removal, current: record[name] });
  }

  function values() {
    const result = {};
    for (const entry of entries) {
      const value = read(entry.kind, entry.input, entry.label);
      if (mode === "create") {
        if (value !== null && !(Array.isArray(value) && !value.length && !required.has(entry.name))) {
          result[entry.name] = value;
        }
        continue;
      }
      if (entry.writeOnly) {
        if (entry.removal?.checked) result[entry.name] = null;
        else if (value !== null) result[entry.name] = value;
      } else if (!same(value, entry.current)) {
        if (value === null && !entry.nullable) throw new FormError(`${entry.label} cannot be empty`);
        result[entry.name] = value;
      }
    }
    return result;
  }

  return { element: el("div", { class: "settings" }, nodes), values };
}
