/**
 * Secret files other users of the host may read (src/common/secret-file.ts): the modes allowed and
 * refused; a token file refused at start and at reload (the tokens in force kept); the coordinator and
 * the agent daemons refusing to start (exit 2) with a TLS key open to others, naming the file and the fix.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { chmodSync, copyFileSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";
import { promisify } from "node:util";
import { checkSecretFile } from "../../../src/common/secret-file";
import { TokenStore } from "../../../src/coordinator/tokens";
import { labTls } from "../../../src/lab/agent-process";

const execFileP = promisify(execFile);
const repoRoot = path.resolve(__dirname, "../../../..");
const cli = path.join(repoRoot, "dist/src/cli/main.js");
const dir = mkdtempSync(path.join(tmpdir(), "rbdbackup-secret-file-"));
after(() => rmSync(dir, { recursive: true, force: true }));

const TOKEN = "0123456789abcdef0123456789abcdef-reader";

function fileWithMode(name: string, mode: number, text = "x\n"): string {
  const f = path.join(dir, name);
  writeFileSync(f, text);
  chmodSync(f, mode); // whatever the umask
  return f;
}

/** Runs a daemon of the CLI with `config`; resolves with its exit code and stderr (it must exit). */
async function daemon(kind: "coordinator" | "agent", config: object) {
  const cfg = path.join(dir, `${kind}.json`);
  writeFileSync(cfg, JSON.stringify(config));
  return execFileP(process.execPath, [cli, kind, "--config", cfg], { timeout: 30_000 }).then(
    () => assert.fail(`the ${kind} started`),
    (e: { code: number; stderr: string }) => e,
  );
}

/** The lab's coordinator or agent certificate, its key copied beside with `mode`. */
function tlsWithKeyMode(name: string, mode: number) {
  const t = labTls(name);
  const key = path.join(dir, `${name}-${mode.toString(8)}.key`);
  copyFileSync(t.key as string, key);
  chmodSync(key, mode);
  return { ca: t.ca, cert: t.cert, key };
}

describe("secret files", () => {
  it("0600, 0640, 0400, 0440 and 0700 pass; any access of others, or a group that may write, is refused naming the file, the mode and the fix", () => {
    for (const m of [0o600, 0o640, 0o400, 0o440, 0o700])
      checkSecretFile(fileWithMode(`ok-${m.toString(8)}`, m), "TLS key");
    for (const [m, who] of [
      [0o644, /\(other users have access\)/],
      [0o604, /\(other users have access\)/],
      [0o601, /\(other users have access\)/],
      [0o660, /\(its group may write it\)/],
      [0o620, /\(its group may write it\)/],
      [0o666, /\(other users have access, its group may write it\)/],
    ] as const) {
      const f = fileWithMode(`bad-${m.toString(8)}`, m);
      assert.throws(
        () => checkSecretFile(f, "TLS key"),
        (e: Error) =>
          e.message.includes(`the TLS key ${f} has mode 0${m.toString(8)} `) &&
          who.test(e.message) &&
          e.message.includes(`chmod 600 ${f}`),
        `mode 0${m.toString(8)}`,
      );
    }
    checkSecretFile(path.join(dir, "not-there"), "TLS key"); // left to the code that reads it
  });

  it("a token file other users may read: refused at start; at reload the tokens in force are kept", () => {
    const f = fileWithMode("tokens-open", 0o644, `reader ${TOKEN}\n`);
    assert.throws(() => new TokenStore(f), /the API token file .* has mode 0644 \(other users have access\)/);
    chmodSync(f, 0o600);
    const s = new TokenStore(f);
    assert.equal(s.roleOf(TOKEN), "reader");
    writeFileSync(f, `operator ${TOKEN}\n`);
    chmodSync(f, 0o644);
    assert.throws(() => s.reload(), /has mode 0644/);
    assert.equal(s.roleOf(TOKEN), "reader", "the tokens in force are kept");
    chmodSync(f, 0o640);
    assert.equal(s.reload(), 1);
    assert.equal(s.roleOf(TOKEN), "operator");
  });

  it("the coordinator refuses to start with a TLS key other users may read: exit 2, naming it", async () => {
    const tls = tlsWithKeyMode("coordinator", 0o644);
    const r = await daemon("coordinator", {
      listen: "127.0.0.1:0",
      metricsListen: "",
      tls,
      catalog: { path: path.join(dir, "catalog.sqlite") },
    });
    assert.equal(r.code, 2, r.stderr);
    assert.match(
      r.stderr,
      new RegExp(`cannot start: the TLS key ${tls.key} has mode 0644 \\(other users have access\\)`),
    );
  });

  it("an agent refuses to start with a TLS key other users may read: exit 2, naming it", async () => {
    const tls = tlsWithKeyMode("agent-site-a", 0o604);
    const r = await daemon("agent", {
      agentId: "agent-site-a",
      cluster: { name: "site-a", conf: path.join(dir, "ceph.conf") },
      listen: "127.0.0.1:0",
      transferListen: "127.0.0.1:0",
      metricsListen: "",
      coordinator: { address: "127.0.0.1:1" },
      tls,
      stateDir: path.join(dir, "agent-state"),
    });
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, new RegExp(`the TLS key ${tls.key} has mode 0604 \\(other users have access\\)`));
  });
});
