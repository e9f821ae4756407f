/**
 * The dependency rule, checked by the build (`npm run check:deps`, part of `npm run build` and of
 * `npm test`): which part of the code may import which. Shared code depends on nothing above it, the
 * coordinator and the CLI never load Ceph, and the agent stack reads top-down
 * (agent → engine → transfer → ceph → native), each layer importing only the ones below it.
 *
 * Imports are read as text (static `import`/`export … from`, `import("…")`, `require("…")` with a
 * literal); type-only imports count too, because they shape the structure just the same.
 */
import { readdirSync, readFileSync, statSync } from "node:fs";
import path from "node:path";

export interface Rule {
  /** Files whose path (repo-relative, "/" separators) starts with this. */
  from: string;
  /** Imported paths starting with any of these are refused. */
  forbid: string[];
  why: string;
  /** Allowed exceptions: "importer -> imported" exactly, with the reason in a comment next to it. */
  allow?: string[];
}

const AGENT_LAYERS = ["agents/agent/", "agents/engine/", "agents/transfer/", "agents/ceph/"];

export const RULES: Rule[] = [
  {
    from: "src/common/",
    forbid: ["agents/", "src/coordinator/", "src/cli/", "src/demo/", "src/lab/"],
    why: "shared code depends on nothing above it (and must never load Ceph)",
  },
  {
    from: "src/coordinator/",
    forbid: ["agents/", "src/cli/", "src/demo/", "src/lab/"],
    why: "a coordinator host must not need Ceph: the coordinator talks to agents only over gRPC",
  },
  // Inside the coordinator: the API calls the scheduler, both use the catalog; never the other way.
  {
    from: "src/coordinator/scheduler/",
    forbid: ["src/coordinator/api/"],
    why: "the scheduler runs jobs; the API (above it) creates them",
  },
  {
    from: "src/coordinator/catalog/",
    forbid: ["src/coordinator/api/", "src/coordinator/scheduler/"],
    why: "the catalog stores records and knows nothing of who uses them",
  },
  {
    from: "src/cli/",
    forbid: ["agents/", "src/coordinator/", "src/demo/", "src/lab/"],
    why: "the CLI is a client of the public API; the daemons are loaded only when asked for",
    // `rbdbackup agent` runs the agent daemon: loaded by a dynamic import, only for that command.
    allow: ["src/cli/main.ts -> agents/agent/main"],
  },
  // The agent stack: a layer imports only the layers below it.
  ...AGENT_LAYERS.map((layer, i) => ({
    from: layer,
    forbid: AGENT_LAYERS.slice(0, i),
    why: "the agent stack reads top-down: agent → engine → transfer → ceph → native",
  })),
  {
    from: "",
    forbid: ["agents/ceph/native"],
    why: "only the facade in agents/ceph loads and calls the raw addon",
    allow: [],
  },
];

export interface Violation {
  file: string;
  line: number;
  imported: string;
  rule: Rule;
}

const IMPORT_RE = /(?:\bfrom\s*|\bimport\s*\(\s*|\bimport\s+|\brequire\s*\(\s*)["']([^"']+)["']/g;

/** The repo-relative modules a file imports (relative specifiers only; packages are not ours). */
export function importsOf(file: string, source: string): Array<{ imported: string; line: number }> {
  const out: Array<{ imported: string; line: number }> = [];
  for (const m of source.matchAll(IMPORT_RE)) {
    const spec = m[1] as string;
    if (!spec.startsWith(".")) continue;
    const imported = path.posix.normalize(path.posix.join(path.posix.dirname(file), spec));
    const line = source.slice(0, m.index).split("\n").length;
    out.push({ imported, line });
  }
  return out;
}

/** Every violation of `rules` among `files` (repo-relative path → source text). */
export function checkImports(files: Map<string, string>, rules: Rule[] = RULES): Violation[] {
  const violations: Violation[] = [];
  for (const [file, source] of files) {
    for (const { imported, line } of importsOf(file, source)) {
      for (const rule of rules) {
        if (!file.startsWith(rule.from)) continue;
        if (rule.from === "" && file.startsWith("agents/ceph/")) continue; // the facade itself
        const hit = rule.forbid.find((f) => imported === f.replace(/\/$/, "") || imported.startsWith(f));
        if (!hit) continue;
        if (imported.startsWith(rule.from) && rule.from !== "") continue; // within the part itself
        if (rule.allow?.includes(`${file} -> ${imported}`)) continue;
        violations.push({ file, line, imported, rule });
      }
    }
  }
  return violations;
}

/** The TypeScript sources of the repo's code (src/ and agents/, not generated code). */
export function readSources(root: string): Map<string, string> {
  const files = new Map<string, string>();
  const walk = (dir: string) => {
    for (const name of readdirSync(path.join(root, dir))) {
      const rel = `${dir}/${name}`;
      if (rel === "src/gen" || name === "node_modules" || name === "build") continue;
      if (statSync(path.join(root, rel)).isDirectory()) walk(rel);
      else if (name.endsWith(".ts") && !name.endsWith(".d.ts"))
        files.set(rel, readFileSync(path.join(root, rel), "utf8"));
    }
  };
  walk("src");
  walk("agents");
  return files;
}

if (require.main === module) {
  const root = path.resolve(process.argv[2] ?? path.join(__dirname, "../../.."));
  const files = readSources(root);
  const violations = checkImports(files);
  for (const v of violations) {
    process.stderr.write(`${v.file}:${v.line}: imports ${v.imported} — ${v.rule.why}\n`);
  }
  if (violations.length > 0) {
    process.stderr.write(`dependency rule: ${violations.length} forbidden import(s) (rules in test/arch/deps.ts)\n`);
    process.exit(1);
  }
  process.stdout.write(`dependency rule: ${files.size} files, no forbidden import\n`);
}
