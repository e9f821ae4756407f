/**
 * Preloaded (`node --require`) into a child process by no-ceph.test.ts: at exit, writes every module
 * file the process loaded to the file named by RBDBACKUP_TEST_LOADED_MODULES, one per line.
 */
import { writeFileSync } from "node:fs";

const out = process.env.RBDBACKUP_TEST_LOADED_MODULES;
if (out) {
  process.on("exit", () => {
    writeFileSync(out, `${Object.keys(require.cache).join("\n")}\n`);
  });
}
