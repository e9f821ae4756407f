/**
 * The state directory's claim (agents/agent/state-dir.ts): a live agent's claim refuses a second agent; a
 * claim whose pid was reused by another process (after a reboot or a crash) is stale and taken over — it
 * used to refuse the start for good whenever the pid now ran any node process. Real processes where the
 * test needs one (a child that stays up); a fake process view for the reused-pid and other-boot cases.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";
import {
  claimStateDir,
  formatHolder,
  holderAlive,
  PID_FILE,
  type ProcessView,
  parseHolder,
  procView,
  StateDirInUseError,
} from "../../../agents/agent/state-dir";

const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});
function freshDir(): string {
  const d = mkdtempSync(path.join(tmpdir(), "rbdbackup-statedir-"));
  dirs.push(d);
  return d;
}
const pidFile = (d: string) => path.join(d, PID_FILE);

/** A process view over a table of pid → start time, with this boot's id. */
function fakeView(procs: Record<number, string>, boot = "boot-1", args: Record<number, string[]> = {}): ProcessView {
  return { startTime: (pid) => procs[pid], bootId: () => boot, args: (pid) => args[pid] ?? [] };
}

describe("agent state dir claim", () => {
  it("an empty directory is claimed: agent.pid names this process, its start time and boot; release removes it", () => {
    const d = freshDir();
    const release = claimStateDir(d);
    const h = parseHolder(readFileSync(pidFile(d), "utf8"));
    assert.equal(h?.pid, process.pid);
    assert.equal(h?.startTime, procView.startTime(process.pid));
    assert.equal(h?.bootId, procView.bootId());
    assert.ok(holderAlive(h as NonNullable<typeof h>, procView), "this process's own claim reads as live");
    release();
    assert.equal(existsSync(pidFile(d)), false, "a clean stop leaves no claim");
    assert.equal(existsSync(path.join(d, `${PID_FILE}.${process.pid}.tmp`)), false, "no temporary file left");
  });

  it("a live agent's claim refuses a second one, and the claim is unchanged", () => {
    const d = freshDir();
    // A real other process, claimed as its own: its pid and start time from /proc.
    const child = spawn(process.execPath, ["-e", "setTimeout(() => {}, 60_000)"], { stdio: "ignore" });
    try {
      const pid = child.pid as number;
      const started = procView.startTime(pid); // the pid exists from the fork on
      assert.ok(started, "the child's start time is readable");
      const claim = formatHolder({ pid, startTime: started, bootId: procView.bootId() });
      writeFileSync(pidFile(d), claim);
      assert.throws(
        () => claimStateDir(d),
        (e: unknown) => {
          assert.ok(e instanceof StateDirInUseError);
          assert.match((e as Error).message, new RegExp(`in use by another agent \\(pid ${pid}\\)`));
          return true;
        },
      );
      assert.equal(readFileSync(pidFile(d), "utf8"), claim, "the live claim is untouched");
    } finally {
      child.kill("SIGKILL");
    }
  });

  it("a pid reused by another process (another start time) is stale: taken over", () => {
    const d = freshDir();
    writeFileSync(pidFile(d), formatHolder({ pid: 4242, startTime: "1000", bootId: "boot-1" }));
    // pid 4242 runs, but started later: not the agent that wrote the file (e.g. the coordinator).
    const view = fakeView({ 4242: "9999", 77: "500" }, "boot-1", { 4242: ["node", "main.js", "agent"] });
    const release = claimStateDir(d, view, 77);
    assert.deepEqual(parseHolder(readFileSync(pidFile(d), "utf8")), { pid: 77, startTime: "500", bootId: "boot-1" });
    release();
    assert.equal(existsSync(pidFile(d)), false);
  });

  it("a claim from another boot is stale even when the pid and start time match", () => {
    const d = freshDir();
    writeFileSync(pidFile(d), formatHolder({ pid: 4242, startTime: "1000", bootId: "boot-0" }));
    const release = claimStateDir(d, fakeView({ 4242: "1000", 77: "500" }, "boot-1"), 77);
    assert.equal(parseHolder(readFileSync(pidFile(d), "utf8"))?.pid, 77);
    release();
  });

  it("a dead pid, a torn file, or an empty one is stale", () => {
    for (const text of [formatHolder({ pid: 4242, startTime: "1000", bootId: "boot-1" }), "42", "", "garbage\n"]) {
      const d = freshDir();
      writeFileSync(pidFile(d), text);
      const release = claimStateDir(d, fakeView({ 77: "500" }), 77);
      assert.equal(parseHolder(readFileSync(pidFile(d), "utf8"))?.pid, 77, `after ${JSON.stringify(text)}`);
      release();
    }
  });

  it("the earlier format (a pid alone) holds only while that pid runs `rbdbackup agent`", () => {
    const d = freshDir();
    writeFileSync(pidFile(d), "4242\n");
    const agentRunning = fakeView({ 4242: "1", 77: "500" }, "boot-1", { 4242: ["node", "main.js", "agent"] });
    assert.throws(() => claimStateDir(d, agentRunning, 77), StateDirInUseError);
    assert.equal(readFileSync(pidFile(d), "utf8"), "4242\n");
    const coordinatorRunning = fakeView({ 4242: "1", 77: "500" }, "boot-1", {
      4242: ["node", "main.js", "coordinator"],
    });
    const release = claimStateDir(d, coordinatorRunning, 77);
    assert.equal(parseHolder(readFileSync(pidFile(d), "utf8"))?.pid, 77);
    release();
  });

  it("a claim naming this very pid (a restart that got the same pid, e.g. a container's pid 1) is stale", () => {
    for (const text of ["77\n", formatHolder({ pid: 77, startTime: "400", bootId: "boot-1" })]) {
      const d = freshDir();
      writeFileSync(pidFile(d), text);
      // The earlier format naming pid 77, which now runs `rbdbackup agent`: this agent itself.
      const view = fakeView({ 77: "500" }, "boot-1", { 77: ["node", "main.js", "agent"] });
      const release = claimStateDir(d, view, 77);
      assert.deepEqual(parseHolder(readFileSync(pidFile(d), "utf8")), { pid: 77, startTime: "500", bootId: "boot-1" });
      release();
    }
  });

  it("an agent.pid that cannot be read (a directory, no permission) is refused at once, naming it", () => {
    const d = freshDir();
    mkdirSync(pidFile(d));
    assert.throws(
      () => claimStateDir(d, fakeView({ 77: "500" }), 77),
      (e: unknown) => e instanceof StateDirInUseError && /cannot read .*agent\.pid/.test((e as Error).message),
    );
  });

  it("a stale claim another agent takes over while this one judges it: this one gives up, the other's claim stands", () => {
    const d = freshDir();
    writeFileSync(pidFile(d), formatHolder({ pid: 4242, startTime: "1000", bootId: "boot-1" }));
    const theirs = formatHolder({ pid: 88, startTime: "600", bootId: "boot-1" });
    const view = fakeView({ 77: "500", 88: "600" });
    // While this agent looks at the stale holder, agent 88 removes it and links its own claim.
    const startTime = view.startTime;
    view.startTime = (pid) => {
      if (pid === 4242) {
        rmSync(pidFile(d));
        writeFileSync(pidFile(d), theirs);
      }
      return startTime(pid);
    };
    assert.throws(
      () => claimStateDir(d, view, 77),
      (e: unknown) =>
        e instanceof StateDirInUseError && /claimed by another agent while this one started/.test((e as Error).message),
    );
    assert.equal(readFileSync(pidFile(d), "utf8"), theirs, "the other agent's claim is back in place");
    assert.deepEqual(
      readdirSync(d).filter((f) => f !== PID_FILE),
      [],
      "nothing left aside",
    );
  });

  it("release leaves a claim that is not this process's alone", () => {
    const d = freshDir();
    const release = claimStateDir(d, fakeView({ 77: "500" }), 77);
    const other = formatHolder({ pid: 78, startTime: "600", bootId: "boot-1" });
    writeFileSync(pidFile(d), other); // e.g. an operator removed ours and another agent claimed the dir
    release();
    assert.equal(readFileSync(pidFile(d), "utf8"), other);
  });
});
