// A small, safe Markdown renderer for application descriptions. It builds DOM nodes and
// puts every piece of source text in text nodes: raw HTML in the source shows as text,
// links keep only same-origin paths and http(s) URLs.
//
// Supported: paragraphs, headings, bullet and numbered lists, block quotes, fenced and
// indented code, rules, inline code, **strong**, *emphasis*, [links](url), <autolinks>, bare
// http(s) URLs. Headings are shifted down (# -> h3) to sit under the page's own headings.
import { h, safeHref } from "./dom.js";

const INLINE = new RegExp(
  [
    "(`+)([\\s\\S]*?[^`])\\1(?!`)", // 1,2 code span
    "\\[([^\\]]+)\\]\\(([^)\\s]+)(?:\\s+\"[^\"]*\")?\\)", // 3,4 link
    "\\*\\*([\\s\\S]+?)\\*\\*", // 5 strong
    "(?<![\\w])__([\\s\\S]+?)__(?![\\w])", // 6 strong
    "\\*(?![\\s*])([\\s\\S]+?)\\*", // 7 emphasis
    "(?<![\\w])_(?![\\s_])([\\s\\S]+?)_(?![\\w])", // 8 emphasis
    "<(https?://[^>\\s]+)>", // 9 autolink
    "(https?://[^\\s<]*[^\\s<.,;:!?'\")\\]])", // 10 bare URL
  ].join("|"),
);

function link(text, url) {
  const href = safeHref(url);
  if (!href) return text;
  const external = !href.startsWith("/");
  return h("a", { href, rel: external ? "noopener noreferrer" : null,
    target: external ? "_blank" : null }, text);
}

/** Inline Markdown of one block -> an array of nodes. */
export function inline(text) {
  const out = [];
  let rest = text;
  while (rest) {
    const m = INLINE.exec(rest);
    if (!m) {
      out.push(rest);
      break;
    }
    if (m.index > 0) out.push(rest.slice(0, m.index));
    if (m[2] !== undefined) out.push(h("code", {}, m[2].trim() || m[2]));
    else if (m[3] !== undefined) out.push(link(inline(m[3]), m[4]));
    else if (m[5] !== undefined || m[6] !== undefined) out.push(h("strong", {}, inline(m[5] ?? m[6])));
    else if (m[7] !== undefined || m[8] !== undefined) out.push(h("em", {}, inline(m[7] ?? m[8])));
    else if (m[9] !== undefined) out.push(link(m[9], m[9]));
    else out.push(link(m[10], m[10]));
    rest = rest.slice(m.index + m[0].length);
  }
  return out;
}

const BULLET = /^\s*[-*+]\s+(.*)$/;
const NUMBERED = /^\s*\d{1,9}[.)]\s+(.*)$/;
const HEADING = /^(#{1,6})\s+(.*?)\s*#*\s*$/;
const FENCE = /^\s*(```|~~~)/;
const RULE = /^\s*([-*_])(\s*\1){2,}\s*$/;
const QUOTE = /^\s*>\s?(.*)$/;
const INDENTED = /^( {4}|\t)/;

function startsBlock(line) {
  return FENCE.test(line) || HEADING.test(line) || RULE.test(line) || BULLET.test(line) ||
    NUMBERED.test(line) || QUOTE.test(line);
}

function list(lines, i, pattern, tag) {
  const items = [];
  while (i < lines.length && pattern.test(lines[i])) {
    let text = lines[i].match(pattern)[1];
    i += 1;
    // continuation lines of the same item
    while (i < lines.length && lines[i].trim() && /^\s+/.test(lines[i]) &&
           !BULLET.test(lines[i]) && !NUMBERED.test(lines[i])) {
      text += " " + lines[i].trim();
      i += 1;
    }
    items.push(h("li", {}, inline(text)));
  }
  return [h(tag, {}, items), i];
}

function blocks(lines) {
  const out = [];
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (!line.trim()) {
      i += 1;
    } else if (FENCE.test(line)) {
      const fence = line.trim().slice(0, 3);
      const body = [];
      i += 1;
      while (i < lines.length && !lines[i].trim().startsWith(fence)) body.push(lines[i++]);
      i += 1;
      out.push(h("pre", {}, h("code", {}, body.join("\n"))));
    } else if (HEADING.test(line)) {
      const [, marks, text] = line.match(HEADING);
      out.push(h(`h${Math.min(marks.length + 2, 6)}`, {}, inline(text)));
      i += 1;
    } else if (RULE.test(line)) {
      out.push(h("hr"));
      i += 1;
    } else if (BULLET.test(line)) {
      const [node, next] = list(lines, i, BULLET, "ul");
      out.push(node);
      i = next;
    } else if (NUMBERED.test(line)) {
      const [node, next] = list(lines, i, NUMBERED, "ol");
      out.push(node);
      i = next;
    } else if (QUOTE.test(line)) {
      const body = [];
      while (i < lines.length && QUOTE.test(lines[i])) body.push(lines[i++].match(QUOTE)[1]);
      out.push(h("blockquote", {}, blocks(body)));
    } else if (INDENTED.test(line)) {
      const body = [];
      while (i < lines.length && (INDENTED.test(lines[i]) || !lines[i].trim())) {
        body.push(lines[i++].replace(INDENTED, ""));
      }
      out.push(h("pre", {}, h("code", {}, body.join("\n").replace(/\n+$/, ""))));
    } else {
      const para = [line.trim()];
      i += 1;
      while (i < lines.length && lines[i].trim() && !startsBlock(lines[i])) {
        para.push(lines[i++].trim());
      }
      out.push(h("p", {}, inline(para.join(" "))));
    }
  }
  return out;
}

/** Markdown source -> a DocumentFragment of safe nodes. */
export function renderMarkdown(source) {
  const fragment = document.createDocumentFragment();
  fragment.append(...blocks(String(source ?? "").replace(/\r\n?/g, "\n").split("\n")));
  return fragment;
}
