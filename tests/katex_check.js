#!/usr/bin/env node
// Renders the mathematics of Markdown documents with KaTeX and prints a JSON report.
//
// Usage: node tests/katex_check.js FILE.md...
//
// The documents' conventions (DESIGN §6), which this script also checks:
//   - display math is a line "$$", the LaTeX on the lines below it, and a closing line "$$";
//   - inline math is $...$ inside one line, with no space next to either "$";
//   - "\$" is not used, and no "$" stands in inline code or a fenced code block's math;
//   - math in a table row holds no "|" (GitHub splits table cells on it first).
// Code spans, fenced code blocks and HTML comments are skipped.
//
// Every display block and inline span is rendered with
//   katex.renderToString(src, {displayMode, throwOnError: true, strict: "error", trust: false})
// so an unknown macro, a non-LaTeX character or a KaTeX-only leniency is an error.
//
// KaTeX is found at $KATEX_DIR (the folder of the npm package "katex"), else in
// .node/node_modules/katex at the top of the checkout (.ci/run installs the pinned version
// there).  Exit codes: 0 no failure, 1 some failure (listed in the report), 2 bad usage,
// 3 KaTeX not found.
//
// Report: {"katex": version, "documents": n, "count": blocks and spans, "display": n,
//          "inline": n, "failures": [{"file", "line", "display", "source", "error"}]}
// A failure that breaks a convention has "source" the offending line and "error" saying which.

"use strict";

const fs = require("fs");
const path = require("path");

function loadKatex() {
  const where = process.env.KATEX_DIR || path.join(__dirname, "..", ".node", "node_modules", "katex");
  try {
    return require(path.resolve(where));
  } catch (err) {
    process.stderr.write(`katex_check: KaTeX not found at ${where}: ${err.message}\n`);
    process.exit(3);
  }
}

// Inline code spans (a run of backticks up to the next run of the same length) become spaces,
// so that their "$" are not math and the columns of what remains are unchanged.
function withoutCode(line) {
  let out = "";
  let i = 0;
  while (i < line.length) {
    if (line[i] !== "`") {
      out += line[i];
      i += 1;
      continue;
    }
    let j = i;
    while (j < line.length && line[j] === "`") j += 1;
    const fence = line.slice(i, j);
    const close = line.indexOf(fence, j);
    if (close < 0) {
      out += line.slice(i, j);
      i = j;
      continue;
    }
    out += " ".repeat(close + fence.length - i);
    i = close + fence.length;
  }
  return out;
}

// Every math item of a document: {line, display, source}, and the convention failures.
function extract(text) {
  const lines = text.split("\n");
  const items = [];
  const broken = [];
  let fence = null;
  let comment = false;
  for (let n = 0; n < lines.length; n += 1) {
    const raw = lines[n];
    const line = raw.trim();
    if (fence !== null) {
      if (line.startsWith(fence)) fence = null;
      continue;
    }
    if (comment) {
      if (raw.includes("-->")) comment = false;
      continue;
    }
    const opens = /^(```+|~~~+)/.exec(line);
    if (opens) {
      fence = opens[1];
      continue;
    }
    if (line.startsWith("<!--")) {
      comment = !raw.includes("-->");
      continue;
    }
    if (line === "$$") {
      const start = n;
      const body = [];
      n += 1;
      while (n < lines.length && lines[n].trim() !== "$$") {
        body.push(lines[n]);
        n += 1;
      }
      if (n >= lines.length) {
        broken.push({ line: start + 1, display: true, source: raw, error: "unclosed $$ block" });
        break;
      }
      const source = body.join("\n");
      if (source.includes("$")) {
        broken.push({ line: start + 1, display: true, source, error: "a $ inside a $$ block" });
        continue;
      }
      items.push({ line: start + 1, display: true, source });
      continue;
    }
    const plain = withoutCode(raw);
    if (!plain.includes("$")) continue;
    const fail = (error) => broken.push({ line: n + 1, display: false, source: raw, error });
    if (plain.includes("\\$")) {
      fail("\\$ is not used in these documents");
      continue;
    }
    if (plain.includes("$$")) {
      fail("$$ that is not on a line of its own");
      continue;
    }
    const parts = plain.split("$");
    if (parts.length % 2 === 0) {
      fail("an odd number of $ on the line");
      continue;
    }
    const table = line.startsWith("|");
    for (let k = 1; k < parts.length; k += 2) {
      const source = parts[k];
      if (source === "" || /^\s/.test(source) || /\s$/.test(source)) {
        fail(`a space next to the $ of inline math: $${source}$`);
      } else if (table && source.includes("|")) {
        fail(`a | inside inline math in a table row: $${source}$`);
      } else {
        items.push({ line: n + 1, display: false, source });
      }
    }
  }
  return { items, broken };
}

function main(argv) {
  if (argv.length === 0) {
    process.stderr.write("usage: node tests/katex_check.js FILE.md...\n");
    return 2;
  }
  const katex = loadKatex();
  const report = { katex: katex.version, documents: 0, count: 0, display: 0, inline: 0, failures: [] };
  for (const file of argv) {
    const { items, broken } = extract(fs.readFileSync(file, "utf8"));
    report.documents += 1;
    const failures = broken.map((b) => ({ file, ...b }));
    for (const item of items) {
      report.count += 1;
      report[item.display ? "display" : "inline"] += 1;
      try {
        katex.renderToString(item.source, {
          displayMode: item.display,
          throwOnError: true,
          strict: "error",
          trust: false,
        });
      } catch (err) {
        failures.push({ file, ...item, error: String(err.message) });
      }
    }
    failures.sort((a, b) => a.line - b.line); // Array.prototype.sort is stable
    report.failures.push(...failures);
  }
  process.stdout.write(JSON.stringify(report, null, 1) + "\n");
  return report.failures.length === 0 ? 0 : 1;
}

process.exitCode = main(process.argv.slice(2));
