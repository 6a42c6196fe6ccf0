// The job form, rendered from an application's "inputs" description (Everest's
// JSON-Schema-like properties: title, description, type, format, items, enum, default,
// required). Each input becomes a labelled control and a reader that turns it back into the
// JSON value the REST API expects; file inputs are uploaded to /api/files/temp first and
// sent as the URIs the server returns.
import { uploadFile } from "./api.js";
import { h, uniqueId } from "./dom.js";
import { renderMarkdown } from "./markdown.js";

/** A value the user typed that cannot be sent; message names the input. */
export class FieldError extends Error {}

const isUri = (spec) => !!spec && spec.format === "uri" && (spec.type ?? "string") === "string";

function enumValues(spec) {
  if (Array.isArray(spec.enum)) return spec.enum;
  if (Array.isArray(spec.values)) return spec.values;
  return null;
}

/** The kind of control an input description calls for. */
export function kindOf(spec) {
  if (enumValues(spec)) return "enum";
  if (spec.type === "array") return isUri(spec.items) ? "files" : "array";
  if (isUri(spec)) return "file";
  if (["number", "integer", "boolean"].includes(spec.type)) return spec.type;
  return "string";
}

const KIND_LABEL = {
  number: "number", integer: "whole number", boolean: "yes / no", string: "text",
  enum: "one of a list", file: "file", files: "files",
};

/** A short human name of an input's or output's type. */
export function kindLabel(spec) {
  const kind = kindOf(spec);
  if (kind === "array") return `list of ${KIND_LABEL[kindOf(spec.items || {})] || "values"}`;
  return KIND_LABEL[kind];
}

// ---- scalar controls: {control, read() -> value | undefined} --------------------------

function numberControl(spec, attrs, label, value) {
  const integer = kindOf(spec) === "integer";
  const control = h("input", { ...attrs, type: "number", step: integer ? "1" : "any",
    inputmode: integer ? "numeric" : "decimal", min: spec.minimum, max: spec.maximum,
    value: value ?? null });
  const read = () => {
    const text = control.value.trim();
    if (text === "") return undefined;
    const number = Number(text);
    if (!Number.isFinite(number)) throw new FieldError(`${label()}: "${text}" is not a number.`);
    if (integer && !Number.isInteger(number)) {
      throw new FieldError(`${label()}: "${text}" is not a whole number.`);
    }
    return number;
  };
  return { control, read };
}

function stringControl(spec, attrs, value) {
  const multiline = spec.viewType === "textarea" || spec.multiline === true;
  // "examples" (JSON Schema's keyword; e.g. the user's workspaces, added by a plugin) are
  // offered as choices while any other text stays allowed
  const examples = !multiline && Array.isArray(spec.examples)
    ? spec.examples.filter((x) => typeof x === "string") : [];
  const listId = examples.length && attrs.id ? `${attrs.id}-choices` : null;
  const control = multiline
    ? h("textarea", { ...attrs, rows: 4 }, value ?? "")
    : h("input", { ...attrs, type: "text", value: value ?? null, list: listId });
  const extra = listId
    ? h("datalist", { id: listId }, examples.map((x) => h("option", { value: x })))
    : null;
  return { control, extra, read: () => (control.value === "" ? undefined : control.value) };
}

function enumControl(spec, attrs, value) {
  const values = enumValues(spec);
  const hasValue = values.some((v) => v === value);
  const options = [];
  if (!(attrs.required && hasValue)) {
    options.push(h("option", { value: "", selected: !hasValue }, attrs.required ? "Choose…" : "—"));
  }
  values.forEach((v, index) => {
    options.push(h("option", { value: String(index), selected: v === value }, String(v)));
  });
  const control = h("select", attrs, options);
  return { control, read: () => (control.value === "" ? undefined : values[Number(control.value)]) };
}

function booleanControl(attrs, value) {
  const control = h("input", { ...attrs, required: null, type: "checkbox",
    checked: value === true });
  return { control, read: () => control.checked };
}

function scalarControl(spec, attrs, label, value) {
  switch (kindOf(spec)) {
    case "number":
    case "integer":
      return numberControl(spec, attrs, label, value);
    case "enum":
      return enumControl(spec, attrs, value);
    case "boolean":
      return booleanControl(attrs, value);
    default:
      return stringControl(spec, attrs, value);
  }
}

// ---- one field per input ----------------------------------------------------------

function hint(name, spec, id) {
  const facts = [h("code", {}, name), " · ", kindLabel(spec)];
  const meaningful = spec.default !== undefined && spec.default !== null && spec.default !== "" &&
    !(Array.isArray(spec.default) && spec.default.length === 0);
  if (meaningful && kindOf(spec) !== "boolean") {
    facts.push(` · default ${JSON.stringify(spec.default)}`);
  }
  const node = h("div", { class: "hint", id }, h("div", { class: "facts" }, facts));
  if (spec.description) node.append(h("div", { class: "desc" }, renderMarkdown(spec.description)));
  return node;
}

const requiredMark = () => h("span", { class: "req", "aria-hidden": "true", title: "required" }, "*");

function scalarField(name, spec, title) {
  const id = uniqueId(`in-${name}`);
  const required = spec.required === true;
  const attrs = { id, name, required, "aria-describedby": `${id}-hint` };
  const { control, read, extra } = scalarControl(spec, attrs, () => title, spec.default);
  const kind = kindOf(spec);
  const label = h("label", { for: id }, title, required ? requiredMark() : null);
  const body = kind === "boolean"
    ? [h("div", { class: "check" }, control, label)]
    : [label, control, extra || null];
  return { node: h("div", { class: "field" }, body, hint(name, spec, `${id}-hint`)), read };
}

function fileField(name, spec, title, multiple) {
  const id = uniqueId(`in-${name}`);
  const required = spec.required === true;
  const control = h("input", { id, name, type: "file", multiple, required,
    "aria-describedby": `${id}-hint` });
  const label = h("label", { for: id }, title, required ? requiredMark() : null);
  const read = async (progress) => {
    const files = Array.from(control.files || []);
    if (files.length === 0) return undefined;
    const uris = [];
    for (const file of files) {
      progress(`Uploading ${file.name}…`);
      uris.push(await uploadFile(file));
    }
    return multiple ? uris : uris[0];
  };
  return { node: h("div", { class: "field" }, label, control, hint(name, spec, `${id}-hint`)),
    read, uploads: true };
}

function arrayField(name, spec, title) {
  const id = uniqueId(`in-${name}`);
  const items = spec.items || { type: "string" };
  const required = spec.required === true;
  const rows = h("ol", { class: "rows" });
  const readers = new Map();

  const renumber = () => {
    Array.from(rows.children).forEach((row, i) => {
      row.querySelector("[data-item]").setAttribute("aria-label", `${title}, item ${i + 1}`);
      row.querySelector("button").setAttribute("aria-label", `Remove ${title} item ${i + 1}`);
    });
  };
  const addRow = (value) => {
    const attrs = { name: `${name}[]`, "data-item": "" };
    const { control, read } = scalarControl(items, attrs, () => title, value);
    const remove = h("button", { type: "button", class: "link" }, "Remove");
    const row = h("li", { class: "row" }, control, remove);
    remove.addEventListener("click", () => {
      readers.delete(row);
      row.remove();
      renumber();
    });
    readers.set(row, read);
    rows.append(row);
    renumber();
    return control;
  };
  const initial = Array.isArray(spec.default) ? spec.default : [];
  if (initial.length) initial.forEach(addRow);
  else addRow(undefined);

  const add = h("button", { type: "button" }, "Add item");
  add.addEventListener("click", () => addRow(undefined).focus());
  const read = () => {
    const values = Array.from(rows.children).map((row) => readers.get(row)())
      .filter((v) => v !== undefined);
    return values.length || required ? values : undefined;
  };
  const legend = h("legend", {}, title, required ? requiredMark() : null);
  const node = h("fieldset", { class: "field array", id, "aria-describedby": `${id}-hint` },
    legend, rows, add, hint(name, spec, `${id}-hint`));
  return { node, read };
}

/**
 * Build the controls for an application's inputs description.
 * An input marked "filledByServer": true (the server supplies it when it is missing, e.g.
 * the relay ticket of a jupyter-session) is optional here and tucked into a closed
 * "Filled in by the server" section.
 * Returns {nodes, read(progress) -> Promise<object>}: read() validates, uploads the files
 * (reporting through progress(text)) and resolves to the "inputs" object to submit, leaving
 * out empty optional inputs so the server applies its defaults. Rejects with FieldError or
 * ApiError.
 */
export function buildInputs(inputs) {
  const fields = Object.entries(inputs || {}).map(([name, raw]) => {
    let spec = raw && typeof raw === "object" ? raw : {};
    const serverFilled = spec.filledByServer === true;
    if (serverFilled) spec = { ...spec, required: false };
    const title = spec.title || name;
    let field;
    switch (kindOf(spec)) {
      case "file":
        field = fileField(name, spec, title, false);
        break;
      case "files":
        field = fileField(name, spec, title, true);
        break;
      case "array":
        field = arrayField(name, spec, title);
        break;
      default:
        field = scalarField(name, spec, title);
    }
    field.node.dataset.input = name;
    field.node.dataset.kind = kindOf(spec);
    return { name, serverFilled, ...field };
  });
  const read = async (progress = () => {}) => {
    const values = {};
    // Check every typed value before spending time on uploads.
    for (const f of fields.filter((f) => !f.uploads)) values[f.name] = await f.read(progress);
    for (const f of fields.filter((f) => f.uploads)) values[f.name] = await f.read(progress);
    const inputs = {};
    for (const f of fields) if (values[f.name] !== undefined) inputs[f.name] = values[f.name];
    return inputs;
  };
  const nodes = fields.filter((f) => !f.serverFilled).map((f) => f.node);
  const filled = fields.filter((f) => f.serverFilled).map((f) => f.node);
  if (filled.length) {
    nodes.push(h("details", { class: "server-filled" },
      h("summary", {}, `Filled in by the server (${filled.length})`),
      h("p", { class: "muted" },
        "Leave these empty and the server fills them in; a value you enter is used instead."),
      filled));
  }
  return { nodes, read };
}
