/**
 * Per-verb help: `rbdbackup backup create --help` (and -h, `rbdbackup help backup create`,
 * `rbdbackup backup help create`) prints that verb's help — its synopsis, flags and an example — not
 * the whole usage; `rbdbackup backup --help` lists the backup verbs. Every verb has a help whose
 * flags the verb really accepts. And the built CLI runs as an installed command (shebang, through a
 * symlink on PATH, as npm install -g / npm link set it up). No coordinator involved.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";
import { agentClientCommand } from "../../../src/cli/commands/agent";
import { backupCommand } from "../../../src/cli/commands/backup";
import { catalogCommand } from "../../../src/cli/commands/catalog";
import { clusterCommand } from "../../../src/cli/commands/cluster";
import { jobCommand } from "../../../src/cli/commands/job";
import { policyCommand } from "../../../src/cli/commands/policy";
import { protectionCommand } from "../../../src/cli/commands/protection";
import { recordCommand } from "../../../src/cli/commands/record";
import { volumeCommand } from "../../../src/cli/commands/volume";
import { type NounHelp, verbHelpText, wrap } from "../../../src/cli/help";
import { main } from "../../../src/cli/main";
import { nouns, usage } from "../../../src/cli/usage";

const CLI = path.join(__dirname, "../../../src/cli/main.js");
const dir = mkdtempSync(path.join(tmpdir(), "rbdbackup-cli-help-"));
after(() => rmSync(dir, { recursive: true, force: true }));

/** The built CLI as a child process. */
function cli(args: string[]) {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8", timeout: 20_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

/** A stream's write that keeps strings in `into` and hands anything else to `pass`. */
function capture(into: string[], pass: typeof process.stdout.write): typeof process.stdout.write {
  return ((chunk: unknown, ...rest: unknown[]) =>
    typeof chunk === "string"
      ? into.push(chunk) > 0
      : (pass as (...a: unknown[]) => boolean)(chunk, ...rest)) as typeof process.stdout.write;
}

/** main() in this process, stdout and stderr captured (cheaper than a child for the help variants). */
async function inProcess(args: string[]) {
  const out: string[] = [];
  const err: string[] = [];
  const [o, e] = [process.stdout.write, process.stderr.write];
  // Strings are the CLI's output; anything else (the test runner's own reports, Buffers) goes through.
  process.stdout.write = capture(out, o.bind(process.stdout));
  process.stderr.write = capture(err, e.bind(process.stderr));
  try {
    const code = await main(args);
    return { code, out: out.join(""), err: err.join("") };
  } finally {
    [process.stdout.write, process.stderr.write] = [o, e];
  }
}

const commands: Record<string, (argv: string[]) => Promise<number>> = {
  backup: backupCommand,
  job: jobCommand,
  policy: policyCommand,
  protection: protectionCommand,
  agent: agentClientCommand,
  cluster: clusterCommand,
  record: recordCommand,
  catalog: catalogCommand,
  volume: volumeCommand,
};

describe("per-verb help", () => {
  it("backup create --help, -h, help backup create and backup help create: that verb's help only", async () => {
    const r = cli(["backup", "create", "--help"]);
    assert.equal(r.code, 0, r.err);
    assert.equal(r.err, "");
    assert.match(r.out, /^usage: rbdbackup backup create --volume CLUSTER\/POOL\[\/NAMESPACE\]\/IMAGE --to /);
    for (const flag of [
      "--volume",
      "--to",
      "--mode",
      "--volume-id",
      "--meta",
      "--idempotency-key",
      "--max-snapshots",
      "--wait",
    ]) {
      assert.match(r.out, new RegExp(`^  ${flag}\\b`, "m"), flag);
    }
    assert.match(
      r.out,
      /^example:\n {2}rbdbackup backup create --volume site-a\/rbd\/vol-1 --to site-b\/backups --wait$/m,
    );
    // Not the whole usage: no other verb, no exit code table.
    assert.doesNotMatch(r.out, /exit codes:|backup list|job watch|record import/);
    for (const other of [
      ["backup", "create", "-h"],
      ["help", "backup", "create"],
      ["backup", "help", "create"],
      ["backup", "create", "--volume", "a/b/c", "--help"],
      ["--json", "backup", "create", "--help"],
    ]) {
      const o = await inProcess(other);
      assert.equal(o.code, 0, `${other.join(" ")}: ${o.err}`);
      assert.equal(o.out, r.out, other.join(" "));
    }
  });

  it("backup --help (and help backup, backup help, backup -h) lists the backup verbs", async () => {
    const r = await inProcess(["backup", "--help"]);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /^usage: rbdbackup backup <command>/);
    const listed = [...r.out.matchAll(/^ {2}([a-z]+) {2,}/gm)].map((m) => m[1]);
    assert.deepEqual(listed, [
      "create",
      "list",
      "show",
      "delete",
      "restore",
      "snapshots",
      "verify",
      "export",
      "import",
    ]);
    assert.doesNotMatch(r.out, /--volume|exit codes:/);
    for (const other of [
      ["help", "backup"],
      ["backup", "help"],
      ["backup", "-h"],
    ]) {
      assert.equal((await inProcess(other)).out, r.out, other.join(" "));
    }
  });

  it("global flags before or after help do not change which help: --json help, help --json backup", async () => {
    const whole = await inProcess(["help"]);
    const verbs = await inProcess(["help", "backup"]);
    for (const [args, want] of [
      [["--json", "help"], whole],
      [["help", "--json"], whole],
      [["--json", "help", "backup"], verbs],
      [["--timeout", "5", "help", "backup"], verbs],
    ] as const) {
      const r = await inProcess([...args]);
      assert.equal(r.code, 0, `${args.join(" ")}: ${r.err}`);
      assert.equal(r.out, want.out, args.join(" "));
    }
  });

  it("help for something unknown is a usage error (exit 2), not the whole usage", async () => {
    for (const args of [
      ["backup", "nope", "--help"],
      ["help", "backup", "nope"],
      ["help", "nonsense"],
    ]) {
      const r = await inProcess(args);
      assert.equal(r.code, 2, args.join(" "));
      assert.match(r.err, /^rbdbackup: unknown command/, args.join(" "));
      assert.equal(r.out, "");
    }
  });

  it("rbdbackup help: every verb's usage line and summary, from the same help the verbs print", async () => {
    const r = await inProcess(["help"]);
    assert.equal(r.code, 0);
    assert.equal(r.out, usage);
    for (const n of nouns) {
      for (const [verb, v] of Object.entries(n.verbs)) {
        assert.ok(usage.includes(`  ${n.noun} ${verb}`), `${n.noun} ${verb} in the usage`);
        assert.ok(usage.includes(`      ${v.summary}\n`), `${n.noun} ${verb}'s summary in the usage`);
      }
    }
  });

  it("every verb has help: a synopsis naming its flags, a summary, and examples of itself", () => {
    assert.deepEqual(
      nouns.map((n) => n.noun),
      Object.keys(commands),
    );
    for (const n of nouns) {
      for (const [verb, v] of Object.entries(n.verbs)) {
        const name = `${n.noun} ${verb}`;
        assert.ok(v.summary, name);
        assert.ok(v.examples.length > 0, `${name} has an example`);
        for (const e of v.examples) assert.ok(e.startsWith(`${name}`), `${name} example: ${e}`);
        const documented = new Set((v.flags ?? []).flatMap(([f]) => f.match(/--[a-z-]+/g) ?? []));
        for (const f of v.synopsis.match(/--[a-z-]+/g) ?? []) assert.ok(documented.has(f), `${name}: ${f} documented`);
        const text = verbHelpText(n, verb);
        assert.ok(text.startsWith(`usage: rbdbackup ${name}`), name);
        assert.ok(
          text.split("\n").every((l) => l.length <= 120),
          `${name}: lines fit 120 columns`,
        );
      }
    }
  });

  it("every flag a verb's help documents is accepted by that verb", async () => {
    const offline = ["--coordinator", "127.0.0.1:1", "--timeout", "0.2", "--insecure"];
    for (const n of nouns as NounHelp[]) {
      const run = commands[n.noun] as (argv: string[]) => Promise<number>;
      for (const [verb, v] of Object.entries(n.verbs)) {
        for (const [flags] of v.flags ?? []) {
          for (const m of flags.matchAll(/(--[a-z-]+)( [A-Za-z[])?/g)) {
            const args = [verb, m[1] as string, ...(m[2] ? ["x"] : []), ...offline];
            const err = await run(args).then(
              () => undefined,
              (e: Error) => e,
            );
            assert.doesNotMatch(
              String(err?.message),
              /Unknown option|unexpected argument "x"/,
              `${n.noun} ${args.join(" ")}`,
            );
          }
        }
      }
    }
  });

  it("wrap keeps [optional groups] whole and indents continuation lines", () => {
    const text = wrap("usage: x ", "--a A [--mode auto|full|incremental] [--b B]", 30, 9);
    assert.equal(text, "usage: x --a A\n         [--mode auto|full|incremental]\n         [--b B]");
  });
});

describe("rbdbackup as an installed command", () => {
  it("dist/src/cli/main.js starts with a node shebang and runs through a symlink on PATH", () => {
    assert.equal(readFileSync(CLI, "utf8").split("\n")[0], "#!/usr/bin/env node");
    // npm install -g / npm link: a symlink named by package.json "bin" to this file, made executable.
    const pkg = JSON.parse(readFileSync(path.join(__dirname, "../../../../package.json"), "utf8"));
    assert.equal(pkg.bin.rbdbackup, "dist/src/cli/main.js");
    chmodSync(CLI, statSync(CLI).mode | 0o111); // what npm's bin-links does on install
    symlinkSync(CLI, path.join(dir, "rbdbackup"));
    const r = spawnSync("rbdbackup", ["job", "watch", "--help"], {
      encoding: "utf8",
      env: { PATH: `${dir}:${path.dirname(process.execPath)}:/usr/bin:/bin` },
      timeout: 20_000,
    });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /^usage: rbdbackup job watch JOB_ID$/m);
  });
});
