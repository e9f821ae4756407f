/**
 * A native crash leaves its account on stderr (agents/native/src/crash-report.cc): a thread whose C++
 * exception nobody catches ends the process through std::terminate, and before the standard handler
 * aborts, the addon's handler writes the exception and the throwing thread's stack. A child process is
 * made to crash that way (the test-only `terminateOnThread`); it must die of SIGABRT with the report,
 * a stack with frames, then the standard "terminate called" line. A fault in native code
 * (`segfaultOnThread`: a null read) dies of SIGSEGV with its report; a WebAssembly out-of-bounds access
 * (V8 catches it through SIGSEGV too) stays a JS RuntimeError with no report. No core file is written
 * (ulimit -c 0).
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import path from "node:path";
import { describe, it } from "node:test";

const facade = path.resolve(__dirname, "../../../agents/ceph/native.js");

/** Runs `script` in a child node with the addon's test faults, no core file. */
function child(script: string) {
  return spawnSync("bash", ["-c", 'ulimit -c 0; exec "$0" -e "$1"', process.execPath, script], {
    env: { ...process.env, RBDBACKUP_NATIVE_TEST_FAULTS: "1" },
    encoding: "utf8",
    timeout: 30_000,
  });
}

/** stderr holds a line matching `report`, then a stack (backtrace_symbols_fd: one "object(symbol+offset) [address]" line per frame) with a frame of the addon. */
function assertReport(stderr: string, report: RegExp): void {
  const lines = stderr.split("\n");
  const at = lines.findIndex((l) => report.test(l));
  assert.ok(at >= 0, `the report line, in:\n${stderr}`);
  const frames = lines.slice(at + 1).filter((l) => /\[0x[0-9a-f]+\]$/.test(l));
  assert.ok(frames.length >= 3, `frames after the report:\n${stderr}`);
  assert.ok(
    frames.some((l) => l.includes("rbdbackup_native.node")),
    `a frame of the addon:\n${stderr}`,
  );
}

describe("native crash report", () => {
  it("a thread's uncaught std::system_error: SIGABRT, the exception and the thrower's stack on stderr", () => {
    const script = `require(${JSON.stringify(facade)}).native().testing.terminateOnThread()`;
    const r = child(script);
    assert.equal(r.signal, "SIGABRT", `status ${r.status}, signal ${r.signal}, stderr:\n${r.stderr}`);
    assertReport(
      r.stderr,
      /^rbdbackup native: std::terminate on thread \d+: std::system_error \(generic 22\): Invalid argument; the thrower's stack:$/,
    );
    // Then the standard handler, which names the exception too.
    assert.match(r.stderr, /terminate called after throwing an instance of 'std::system_error'/);
  });

  it("a segfault on a thread: SIGSEGV, the address and the faulting thread's stack on stderr", () => {
    const r = child(`require(${JSON.stringify(facade)}).native().testing.segfaultOnThread()`);
    assert.equal(r.signal, "SIGSEGV", `status ${r.status}, signal ${r.signal}, stderr:\n${r.stderr}`);
    assertReport(r.stderr, /^rbdbackup native: SIGSEGV \(address \(nil\)\) on thread \d+; its stack:$/);
  });

  it("a WebAssembly out-of-bounds load (V8 traps it through SIGSEGV) stays a RuntimeError, no report", () => {
    // (module (memory 1) (func (export "f") (result i32) i32.const 131072 i32.load)): past its 64 KiB.
    const wasm = [
      0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, 0x01, 0x05, 0x01, 0x60, 0x00, 0x01, 0x7f, 0x03, 0x02, 0x01, 0x00,
      0x05, 0x03, 0x01, 0x00, 0x01, 0x07, 0x05, 0x01, 0x01, 0x66, 0x00, 0x00, 0x0a, 0x0b, 0x01, 0x09, 0x00, 0x41, 0x80,
      0x80, 0x08, 0x28, 0x02, 0x00, 0x0b,
    ];
    const script = `
      require(${JSON.stringify(facade)}).native();
      const m = new WebAssembly.Instance(new WebAssembly.Module(Uint8Array.from(${JSON.stringify(wasm)})));
      try { m.exports.f(); console.log("no trap"); } catch (e) { console.log(e.constructor.name + ": " + e.message); }`;
    const r = child(script);
    assert.equal(r.status, 0, `status ${r.status}, signal ${r.signal}, stderr:\n${r.stderr}`);
    assert.match(r.stdout, /^RuntimeError: memory access out of bounds/);
    assert.doesNotMatch(r.stderr, /rbdbackup native/);
  });
});
