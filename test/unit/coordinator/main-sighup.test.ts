/**
 * `systemctl reload` (SIGHUP) right after `systemctl start`: a Node process without a SIGHUP handler ends
 * on it — cleanly in systemd's eyes, so `Restart=on-failure` never brought the coordinator back. The
 * entry point (main.ts) holds a handler from before the start to exit. A child process runs it with a
 * start that waits (the catalog and listeners are not the point), is sent SIGHUP while starting, and
 * must still be there, having said so.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { describe, it } from "node:test";

const CHILD = `
const { Coordinator } = require(${JSON.stringify(require.resolve("../../../src/coordinator/coordinator"))});
Coordinator.prototype.start = function () {
  process.stdout.write("starting\\n");
  return new Promise(() => setInterval(() => {}, 1000)); // never starts; the timer keeps it alive
};
require(${JSON.stringify(require.resolve("../../../src/coordinator/main"))}).coordinatorMain(["--insecure"]);
`;

describe("the coordinator's entry point", () => {
  it("survives a SIGHUP while it starts (the reload of a unit just started), and logs it", async () => {
    const child = spawn(process.execPath, ["-e", CHILD], {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, RBDBACKUP_LOG_LEVEL: "info" },
    });
    const deadline = AbortSignal.timeout(30_000);
    let out = "";
    let err = "";
    child.stdout.on("data", (d) => {
      out += d;
    });
    child.stderr.on("data", (d) => {
      err += d;
    });
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
      child.on("exit", (code, signal) => resolve({ code, signal })),
    );
    try {
      const until = async (cond: () => boolean, what: string) => {
        while (!cond()) {
          if (deadline.aborted) throw new Error(`timed out waiting for ${what}; stderr: ${err}`);
          if (child.exitCode !== null || child.signalCode !== null) throw new Error(`child exited; stderr: ${err}`);
          await new Promise((r) => setTimeout(r, 20));
        }
      };
      await until(() => out.includes("starting\n"), "the start");
      child.kill("SIGHUP");
      await until(() => err.includes("SIGHUP while starting: the files are read again once serving"), "the log line");
      assert.equal(child.exitCode, null, "still running");
      assert.equal(child.signalCode, null, "not ended by the signal");
    } finally {
      child.kill("SIGKILL");
      await exited;
    }
  });
});
