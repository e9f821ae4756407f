/**
 * A native crash leaves its account on stderr (agents/native/src/crash-report.cc): a thread whose C++
 * exception nobody catches ends the process through std::terminate, and before the standard handler
 * aborts, the addon's handler writes the exception and the throwing thread's stack. A child process is
 * made to crash that way (the test-only `terminateOnThread`); it must die of SIGABRT with the report,
 * a stack with frames, then the standard "terminate called" line. No core file is written (ulimit -c 0).
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import path from "node:path";
import { describe, it } from "node:test";

const facade = path.resolve(__dirname, "../../../agents/ceph/native.js");

describe("native crash report", () => {
  it("a thread's uncaught std::system_error: SIGABRT, the exception and the thrower's stack on stderr", () => {
    const script = `require(${JSON.stringify(facade)}).native().testing.terminateOnThread()`;
    const r = spawnSync("bash", ["-c", 'ulimit -c 0; exec "$0" -e "$1"', process.execPath, script], {
      env: { ...process.env, RBDBACKUP_NATIVE_TEST_FAULTS: "1" },
      encoding: "utf8",
      timeout: 30_000,
    });
    assert.equal(r.signal, "SIGABRT", `status ${r.status}, signal ${r.signal}, stderr:\n${r.stderr}`);
    const lines = r.stderr.split("\n");
    const report = lines.findIndex((l) =>
      /^rbdbackup native: std::terminate on thread \d+: std::system_error \(generic 22\): Invalid argument; the thrower's stack:$/.test(
        l,
      ),
    );
    assert.ok(report >= 0, `the report line, in:\n${r.stderr}`);
    // backtrace_symbols_fd: one "object(symbol+offset) [address]" line per frame, ours among them.
    const frames = lines.slice(report + 1).filter((l) => /\[0x[0-9a-f]+\]$/.test(l));
    assert.ok(frames.length >= 3, `frames after the report:\n${r.stderr}`);
    assert.ok(
      frames.some((l) => l.includes("rbdbackup_native.node")),
      `a frame of the addon:\n${r.stderr}`,
    );
    // Then the standard handler, which names the exception too.
    assert.match(r.stderr, /terminate called after throwing an instance of 'std::system_error'/);
  });
});
