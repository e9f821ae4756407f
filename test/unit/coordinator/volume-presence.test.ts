/**
 * VolumePresence (src/coordinator/volume-presence.ts) and the last-success gauge: a backed-up volume whose
 * source image is gone leaves `rbdbackup_last_success_timestamp_seconds` (its alert fired forever for a
 * deleted volume); only an agent's word makes a volume gone — a cluster without an agent, or a failed
 * question, changes nothing; a recreated volume comes back; fresh volumes are not asked about; a standby
 * asks nothing. Fake agent sessions answer the probes; the catalog is a fake list of volumes.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Status } from "nice-grpc-common";
import { AppError } from "../../../src/common/errors";
import type { Catalog } from "../../../src/coordinator/catalog/catalog";
import { CoordinatorMetrics } from "../../../src/coordinator/metrics";
import type { Scheduler } from "../../../src/coordinator/scheduler";
import { Sessions } from "../../../src/coordinator/sessions";
import { sourceState, VolumePresence } from "../../../src/coordinator/volume-presence";
import { type Answer, agentRecord, FakeAgentSession } from "../../helpers/fake-agent";
import { waitFor } from "../../helpers/wait";
import { memoryLogger } from "./harness";

const HOUR = 3600_000;
const NOW = Date.parse("2026-12-06T12:00:00Z");

type Vol = { cluster: string; pool: string; namespace: string; image: string; at: number };
const v = (cluster: string, image: string, ageHours: number): Vol => ({
  cluster,
  pool: "rbd",
  namespace: "",
  image,
  at: NOW - ageHours * HOUR,
});

function setup(vols: Vol[], opts: { leading?: boolean; firstSweepMs?: number; concurrency?: number } = {}) {
  const sessions = new Sessions();
  const existing = new Set<string>(); // "cluster/image" the fake clusters hold
  const asked: string[] = [];
  let failing = false;
  const agent = (cluster: string) => {
    const s = new FakeAgentSession(agentRecord(`agent-${cluster}`, cluster));
    s.answer = (req) => {
      if (req.$case !== "probe") return new AppError(Status.UNIMPLEMENTED, req.$case);
      const image = req.value.image?.image ?? "";
      asked.push(`${cluster}/${image}`);
      if (failing) return new AppError(Status.UNAVAILABLE, "cluster busy");
      return {
        $case: "probe",
        value: {
          missingPools: [],
          missingNamespaces: [],
          imageExists: existing.has(`${cluster}/${image}`),
          imageSize: 0,
          imageSnapshots: [],
        },
      };
    };
    sessions.add(s);
    return s;
  };
  const state = { leading: opts.leading ?? true };
  const catalog = { lastSuccessByVolume: () => vols } as unknown as Catalog;
  const presence = new VolumePresence({
    catalog,
    sessions,
    log: memoryLogger(),
    leading: () => state.leading,
    now: () => NOW,
    ...(opts.firstSweepMs ? { firstSweepMs: opts.firstSweepMs } : {}),
    ...(opts.concurrency ? { concurrency: opts.concurrency } : {}),
  });
  const metrics = new CoordinatorMetrics(
    "test",
    { ...catalog, activeJobs: () => [], listAgents: () => [] } as unknown as Catalog,
    sessions,
    { on: () => {} } as unknown as Pick<Scheduler, "on">,
    { gone: (x) => presence.isGone(x) },
  );
  const series = async () =>
    (await metrics.registry.getSingleMetricAsString("rbdbackup_last_success_timestamp_seconds"))
      .split("\n")
      .filter((l) => l.startsWith("rbdbackup_last_success_timestamp_seconds{"))
      .map((l) => /image="([^"]+)"/.exec(l)?.[1]);
  return {
    vols,
    presence,
    agent,
    existing,
    asked,
    series,
    state,
    fail: (on: boolean) => {
      failing = on;
    },
  };
}

describe("volume presence and the last-success gauge", () => {
  it("a stale volume whose image is gone leaves the gauge; one that exists stays; fresh ones are not asked about", async () => {
    const t = setup([v("a", "deleted", 30), v("a", "kept", 30), v("a", "fresh", 2)]);
    t.agent("a");
    t.existing.add("a/kept");
    t.existing.add("a/fresh");
    assert.deepEqual(await t.series(), ["deleted", "kept", "fresh"], "before any sweep: every volume");
    assert.deepEqual(await t.presence.sweep(), { asked: 2, gone: 1, unasked: 0 });
    assert.deepEqual(t.asked.sort(), ["a/deleted", "a/kept"], "only volumes old enough to alert");
    assert.deepEqual(await t.series(), ["kept", "fresh"]);
    // Recreated under its name: back in the gauge at the next sweep.
    t.existing.add("a/deleted");
    await t.presence.sweep();
    assert.deepEqual(await t.series(), ["deleted", "kept", "fresh"]);
    // Gone again, then recreated and backed up (a fresh backup): back at once, without a question.
    t.existing.delete("a/deleted");
    await t.presence.sweep();
    assert.deepEqual(await t.series(), ["kept", "fresh"]);
    (t.vols[0] as Vol).at = NOW - HOUR;
    const asked = t.asked.length;
    await t.presence.sweep();
    assert.deepEqual(await t.series(), ["deleted", "kept", "fresh"]);
    assert.equal(
      t.asked.filter((x) => x === "a/deleted").length,
      t.asked.slice(0, asked).filter((x) => x === "a/deleted").length,
    );
  });

  it("no agent of the cluster, or a question that fails: nothing changes (gone only on an agent's word)", async () => {
    const t = setup([v("a", "x", 30), v("b", "y", 30)]);
    t.agent("a"); // none of cluster b
    assert.equal((await t.presence.sweep()).unasked, 1, "b/y unasked: the next sweep comes soon (start())");
    assert.deepEqual(await t.series(), ["y"], "a/x is gone; b/y was never asked about");
    assert.deepEqual(t.asked, ["a/x"]);
    t.fail(true);
    t.existing.add("a/x");
    assert.deepEqual(
      await t.presence.sweep(),
      { asked: 0, gone: 1, unasked: 2 },
      "a failed question keeps what was known",
    );
    assert.deepEqual(await t.series(), ["y"]);
  });

  it("asks a few at a time, never more, until every stale volume is answered", async () => {
    const vols = Array.from({ length: 11 }, (_, i) => v(i % 2 ? "a" : "b", `gone-${i}`, 30));
    const t = setup(vols, { concurrency: 3 });
    const held: Array<() => void> = [];
    let inFlight = 0;
    let peak = 0;
    for (const cluster of ["a", "b"]) {
      const s = t.agent(cluster);
      const quick = s.answer;
      s.answer = (req) => {
        inFlight++;
        peak = Math.max(peak, inFlight);
        return new Promise((resolve) =>
          held.push(() => {
            inFlight--;
            resolve(quick(req) as Answer);
          }),
        );
      };
    }
    const sweep = t.presence.sweep();
    let released = 0;
    while (released < vols.length) {
      const expected = Math.min(3, vols.length - released);
      await waitFor(() => held.length === expected, { what: `${expected} questions in flight`, timeoutMs: 10_000 });
      (held.shift() as () => void)();
      released++;
    }
    assert.deepEqual(await sweep, { asked: 11, gone: 11, unasked: 0 });
    assert.equal(peak, 3);
    assert.deepEqual(await t.series(), []);
  });

  it("a standby asks nothing", async () => {
    const t = setup([v("a", "x", 30)], { leading: false });
    t.agent("a");
    assert.deepEqual(await t.presence.sweep(), { asked: 0, gone: 0, unasked: 0 });
    assert.deepEqual(t.asked, []);
  });

  it("started on a standby, it sweeps soon after this coordinator leads", async () => {
    const t = setup([v("a", "x", 30)], { leading: false, firstSweepMs: 20 });
    t.agent("a");
    t.presence.start();
    try {
      assert.deepEqual(t.asked, []);
      t.state.leading = true;
      await waitFor(() => t.asked.length > 0, { what: "the first sweep of the new leader", timeoutMs: 10_000 });
      await waitFor(() => t.presence.isGone({ cluster: "a", pool: "rbd", namespace: "", image: "x" }), {
        what: "the sweep's answer",
        timeoutMs: 10_000,
      });
    } finally {
      await t.presence.stop();
    }
  });

  it("a sweep that found its cluster without an agent (not back yet after a restart) is followed by another soon, not an interval later", async () => {
    const t = setup([v("b", "y", 30)], { firstSweepMs: 20 }); // the interval: 15 min
    let sweeps = 0;
    const sweep = t.presence.sweep.bind(t.presence);
    t.presence.sweep = () => sweep().finally(() => sweeps++);
    t.presence.start();
    try {
      await waitFor(() => sweeps >= 1, { what: "the first sweep (no agent of b)", timeoutMs: 10_000 });
      assert.deepEqual(t.asked, []);
      t.agent("b");
      await waitFor(() => t.asked.includes("b/y"), { what: "a sweep soon after, asking about b/y", timeoutMs: 10_000 });
    } finally {
      await t.presence.stop();
    }
  });

  it("sourceState: present, gone (its pool gone, or not there nor in its trash), in the trash, or missing (the agent cannot say)", async () => {
    const sessions = new Sessions();
    const s = new FakeAgentSession(agentRecord("agent-a", "a"));
    let answer: Record<string, unknown> = {};
    const checkTrash: boolean[] = [];
    s.answer = (req) => {
      if (req.$case === "probe") checkTrash.push(req.value.checkTrash);
      return {
        $case: "probe",
        value: {
          missingPools: [],
          missingNamespaces: [],
          imageExists: false,
          imageSize: 0,
          imageSnapshots: [],
          ...answer,
        },
      };
    };
    sessions.add(s);
    const vref = { cluster: "a", pool: "rbd", namespace: "", image: "v" };
    const ask = (a: Record<string, unknown>) => {
      answer = a;
      return sourceState(sessions, vref, new AbortController().signal, { checkTrash: true });
    };
    assert.equal(await ask({ imageExists: true }), "present");
    assert.equal(await ask({ imageInTrash: false }), "gone");
    assert.equal(await ask({ imageInTrash: true }), "trash");
    assert.equal(await ask({}), "missing", "the agent could not say");
    // Its pool deleted: gone with it. Its namespace no longer listed: its trash still says.
    assert.equal(await ask({ missingPools: ["rbd"] }), "gone");
    assert.equal(await ask({ missingNamespaces: ["rbd/ns"], imageInTrash: true }), "trash");
    assert.equal(await ask({ missingNamespaces: ["rbd/ns"], imageInTrash: false }), "gone");
    assert.equal(await ask({ missingNamespaces: ["rbd/ns"] }), "missing");
    assert.ok(checkTrash.every(Boolean), "the trash asked about");
    await sourceState(sessions, vref, new AbortController().signal);
    assert.equal(checkTrash.at(-1), false, "not unless asked (the presence gauge's questions)");
    await assert.rejects(
      sourceState(sessions, { ...vref, cluster: "b" }, new AbortController().signal),
      /no agent of cluster b/,
    );
  });
});
