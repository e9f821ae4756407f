/** The dependency rule (test/arch/deps.ts): the tree obeys it, and each kind of breach is caught. */
import assert from "node:assert/strict";
import path from "node:path";
import { describe, it } from "node:test";
import { checkImports, importsOf, readSources } from "../../arch/deps";

const repoRoot = path.resolve(__dirname, "../../../..");

const breaches = (file: string, source: string) =>
  checkImports(new Map([[file, source]])).map((v) => `${v.file} -> ${v.imported}`);

describe("dependency rule", () => {
  it("the repository obeys it", () => {
    const files = readSources(repoRoot);
    assert.ok(files.size > 50, `read ${files.size} files`);
    assert.deepEqual(
      checkImports(files).map((v) => `${v.file}:${v.line} -> ${v.imported}`),
      [],
    );
  });

  it("src/common importing agents/ fails (static, type-only, re-export, dynamic and require)", () => {
    for (const [stmt, target] of [
      ['import { CephError } from "../../agents/ceph";', "agents/ceph"],
      ['import type { Image } from "../../agents/ceph/image";', "agents/ceph/image"],
      ['export { connect } from "../../agents/ceph";', "agents/ceph"],
      ['const m = await import("../../agents/ceph");', "agents/ceph"],
      ['const m = require("../../agents/engine/backup");', "agents/engine/backup"],
    ] as const) {
      assert.deepEqual(breaches("src/common/errors.ts", stmt), [`src/common/errors.ts -> ${target}`], stmt);
    }
  });

  it("the coordinator and the CLI may not import agents/; the CLI may load the agent daemon on demand", () => {
    assert.deepEqual(breaches("src/coordinator/api.ts", 'import { x } from "../../agents/engine/backup";'), [
      "src/coordinator/api.ts -> agents/engine/backup",
    ]);
    assert.deepEqual(breaches("src/cli/format.ts", 'import { x } from "../../agents/agent/main";'), [
      "src/cli/format.ts -> agents/agent/main",
    ]);
    assert.deepEqual(breaches("src/cli/main.ts", 'const { agentMain } = await import("../../agents/agent/main");'), []);
    assert.deepEqual(breaches("src/coordinator/api.ts", 'import { x } from "../cli/args";'), [
      "src/coordinator/api.ts -> src/cli/args",
    ]);
  });

  it("the agent stack imports only downwards, and only agents/ceph touches the raw addon", () => {
    assert.deepEqual(breaches("agents/transfer/peers.ts", 'import type { T } from "../engine/context";'), [
      "agents/transfer/peers.ts -> agents/engine/context",
    ]);
    assert.deepEqual(breaches("agents/ceph/image.ts", 'import { x } from "../transfer/protocol";'), [
      "agents/ceph/image.ts -> agents/transfer/protocol",
    ]);
    assert.deepEqual(breaches("agents/engine/backup.ts", 'import { x } from "../transfer/source";'), []);
    assert.deepEqual(breaches("agents/engine/backup.ts", 'import { native } from "../ceph/native";'), [
      "agents/engine/backup.ts -> agents/ceph/native",
    ]);
    assert.deepEqual(breaches("agents/ceph/cluster.ts", 'import { native } from "./native";'), []);
  });

  it("reads imports with their line numbers and ignores packages", () => {
    const src = 'import http2 from "node:http2";\nimport { a } from "./a";\n\nexport * from "../b/c";\n';
    assert.deepEqual(importsOf("src/x/y.ts", src), [
      { imported: "src/x/a", line: 2 },
      { imported: "src/b/c", line: 4 },
    ]);
  });
});
