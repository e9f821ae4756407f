/**
 * Observability as operators use it: `promtool check metrics` on the coordinator's and an agent's
 * /metrics after real jobs; the alert rules checked and unit-tested with promtool; a real Prometheus
 * (Debian's package, loopback, temporary directory) scraping the lab and answering queries; every
 * metric the alert rules and the Grafana dashboard use exists; the systemd units verify.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { repoRoot } from "../../../src/lab/agent-process";
import { killAtExit } from "../../../src/lab/scratch";
import {
  backupRequest,
  type Deployment,
  deploy,
  freePort,
  removeBackups,
  scrape,
  succeeded,
} from "../../helpers/coordinator";
import { Volumes } from "../../helpers/volumes";
import { exited, tempDir, waitFor } from "../../helpers/wait";

const has = (cmd: string) => spawnSync("sh", ["-c", `command -v ${cmd}`]).status === 0;

/** rbdbackup_* metric names a PromQL text uses (histogram suffixes folded into their family). */
function metricNames(text: string): Set<string> {
  const names = new Set<string>();
  for (const m of text.matchAll(/\brbdbackup_[a-z_]+/g)) names.add(m[0].replace(/_(bucket|sum|count)$/, ""));
  return names;
}

describe("observability", () => {
  let d: Deployment;
  const vols = new Volumes();
  let coordText = "";
  let agentText = "";
  let agentTexts: string[] = [];

  before(async () => {
    d = await deploy();
    const v = await vols.create("site-a", "rbd", 16, 10);
    await succeeded(d.client, (await d.client.createBackup(backupRequest({ cluster: "site-a", ...v }))).id);
    coordText = await scrape(d.coord.metricsAddress);
    agentTexts = await Promise.all(d.agents.map((a) => scrape(a.metricsAddress)));
    agentText = agentTexts.join("\n");
  });
  after(async () => {
    // The backups this file made leave the lab with it (their base images, snapshots, metadata).
    if (d) await removeBackups(d.client).catch((e) => console.log(`# cleanup: ${(e as Error).message}`));
    await d?.stop();
    await vols.cleanup();
  });

  it("promtool check metrics passes on the coordinator's and the agents' /metrics", async (t) => {
    if (!has("promtool")) return t.skip("promtool not installed (Debian package prometheus)");
    for (const [who, text] of [["coordinator", coordText], ...agentTexts.map((x, i) => [`agent ${i}`, x])] as const) {
      const r = spawnSync("promtool", ["check", "metrics"], { input: text, encoding: "utf8" });
      assert.equal(r.status, 0, `${who}: ${r.stdout}${r.stderr}`);
      assert.equal(r.stdout.trim() + r.stderr.trim(), "", `${who}: promtool found nothing to say`);
    }
  });

  it("the alert rules pass promtool check rules and their unit tests", async (t) => {
    if (!has("promtool")) return t.skip("promtool not installed (Debian package prometheus)");
    const dir = path.join(repoRoot, "deploy/prometheus");
    const check = spawnSync("promtool", ["check", "rules", "rbdbackup-alerts.yml"], { cwd: dir, encoding: "utf8" });
    assert.equal(check.status, 0, check.stdout + check.stderr);
    // Every rule in the file is one promtool found (none silently dropped).
    const rules = (readFileSync(path.join(dir, "rbdbackup-alerts.yml"), "utf8").match(/^\s*- alert: /gm) ?? []).length;
    assert.ok(rules >= 9, `${rules} alert rules`);
    assert.match(check.stdout, new RegExp(`SUCCESS: ${rules} rules found`));
    const unit = spawnSync("promtool", ["test", "rules", "tests/rbdbackup-alerts.test.yml"], {
      cwd: dir,
      encoding: "utf8",
    });
    assert.equal(unit.status, 0, unit.stdout + unit.stderr);
    const cfg = spawnSync("promtool", ["check", "config", "prometheus.yml"], { cwd: dir, encoding: "utf8" });
    assert.equal(cfg.status, 0, cfg.stdout + cfg.stderr);
  });

  it("every metric the alert rules and the dashboard use is exported", () => {
    const exported = metricNames(`${coordText}\n${agentText}`);
    const used = new Set([
      ...metricNames(readFileSync(path.join(repoRoot, "deploy/prometheus/rbdbackup-alerts.yml"), "utf8")),
      ...metricNames(readFileSync(path.join(repoRoot, "deploy/grafana/rbdbackup-dashboard.json"), "utf8")),
    ]);
    const dashboard = JSON.parse(readFileSync(path.join(repoRoot, "deploy/grafana/rbdbackup-dashboard.json"), "utf8"));
    assert.ok(dashboard.panels.length >= 8);
    const missing = [...used].filter((n) => !exported.has(n));
    assert.deepEqual(missing, [], "metrics used but not exported");
  });

  it("a real Prometheus scrapes the lab and its queries return the job's numbers", async (t) => {
    if (!has("prometheus")) return t.skip("prometheus not installed (Debian package prometheus)");
    const dir = tempDir("rbdbackup-prometheus-");
    const port = await freePort();
    writeFileSync(
      path.join(dir, "prometheus.yml"),
      [
        "global: { scrape_interval: 1s, evaluation_interval: 1s }",
        "scrape_configs:",
        `  - { job_name: rbdbackup-coordinator, static_configs: [ { targets: ["${d.coord.metricsAddress}"] } ] }`,
        `  - { job_name: rbdbackup-agent, static_configs: [ { targets: [${d.agents.map((a) => `"${a.metricsAddress}"`).join(", ")}] } ] }`,
        "",
      ].join("\n"),
    );
    const prom: ChildProcess = spawn(
      "prometheus",
      [
        `--config.file=${path.join(dir, "prometheus.yml")}`,
        `--storage.tsdb.path=${path.join(dir, "data")}`,
        `--web.listen-address=127.0.0.1:${port}`,
      ],
      { stdio: "ignore" },
    );
    killAtExit(prom);
    try {
      const query = async (q: string) => {
        const r = await fetch(`http://127.0.0.1:${port}/api/v1/query?query=${encodeURIComponent(q)}`, {
          signal: AbortSignal.timeout(5000),
        });
        const body = (await r.json()) as {
          data: { result: Array<{ metric: Record<string, string>; value: [number, string] }> };
        };
        return body.data.result;
      };
      let up: Awaited<ReturnType<typeof query>> = [];
      await waitFor(
        async () => {
          assert.equal(prom.exitCode ?? prom.signalCode, null, "Prometheus exited");
          up = await query("up").catch(() => []);
          return up.length === 3 && up.every((s) => s.value[1] === "1");
        },
        {
          what: () => `Prometheus to scrape every target (up: ${JSON.stringify(up)})`,
          timeoutMs: 60_000,
          intervalMs: 500,
        },
      );
      const finished = await query('rbdbackup_jobs_finished_total{operation="backup",result="succeeded"}');
      assert.equal(finished[0]?.value[1], "1");
      const sent = await query('sum(rbdbackup_sent_bytes_total{cluster="site-a"})');
      const jobBytes = await query('rbdbackup_job_data_bytes_total{operation="backup"}');
      assert.ok(Number(sent[0]?.value[1]) > 0);
      assert.equal(sent[0]?.value[1], jobBytes[0]?.value[1], "the agent's and the coordinator's byte counts agree");
      const lag = await query("time() - rbdbackup_last_success_timestamp_seconds");
      assert.equal(lag.length, 1, "one volume is backed up");
      assert.ok(Number(lag[0]?.value[1]) < 600);
    } finally {
      prom.kill("SIGTERM");
      await exited(prom, "Prometheus");
    }
  });

  it("systemd-analyze verify passes on the three units", (t) => {
    if (!has("systemd-analyze")) return t.skip("systemd-analyze not installed (no systemd on this machine)");
    const tmp = tempDir("rbdbackup-units-");
    // A template is verified as one of its instances. The units run /usr/bin/node (Debian's); where
    // node lives elsewhere, verify the copies with this node instead (the rest is unchanged).
    const units = [
      ["rbdbackup-coordinator.service", "rbdbackup-coordinator.service"],
      ["rbdbackup-coordinator-ha.service", "rbdbackup-coordinator-ha.service"],
      ["rbdbackup-agent@.service", "rbdbackup-agent@site-a.service"],
    ].map(([from, to]) => {
      let text = readFileSync(path.join(repoRoot, "deploy/systemd", from as string), "utf8");
      if (!existsSync("/usr/bin/node")) text = text.replaceAll("/usr/bin/node ", `${process.execPath} `);
      const file = path.join(tmp, to as string);
      writeFileSync(file, text);
      return file;
    });
    const r = spawnSync("systemd-analyze", ["verify", ...units], { encoding: "utf8" });
    // verify exits 0 on some parse errors but reports them: silence is the pass.
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stderr.trim(), "", r.stderr);
  });
});
