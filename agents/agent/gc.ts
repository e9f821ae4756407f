/**
 * A full garbage collection on demand, for the quiet release (agents/transfer/quiet-release.ts).
 *
 * Why: the data plane's chunk buffers live outside V8's heap (glibc's main arena), freed only when the
 * collector finds their Buffer objects dead. Once the pools drop their idle buffers nothing allocates
 * in a quiet agent, so V8 never collects and the buffers stayed resident: 54–62 MiB of glibc's main
 * arena, an agent at rest at 150–193 MiB instead of ~100, and the next role's peak started from there
 * (the memory rows at 193 and 196 MiB against the ≤ 192 aim, 2026-12-04).
 *
 * How: `--expose-gc` set at run time, and `gc` taken from a fresh context, where V8 installs it (what
 * Jest's leak detector does); no node flag to remember in deploy/ or the lab. Called once per quiet
 * spell (a full collection of a ~20 MiB heap: milliseconds).
 */
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";

let collect: (() => void) | null = null;

export function garbageCollector(): () => void {
  if (!collect) {
    setFlagsFromString("--expose-gc");
    collect = runInNewContext("gc") as () => void;
  }
  return collect;
}
