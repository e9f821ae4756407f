/**
 * The busy signals a destination sends while it does not read (BulkOpen.busy_interval_ms; the Transfer
 * call's busy PINGs): their encoding, and when the server-side beat fires. The end-to-end behaviour (a
 * destination preparing longer than the source's idle bound) is in bulk-bad-input.test.ts.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  BUSY_FRAME,
  busyIntervalFor,
  leadingBusyFrames,
  parseResult,
  resultFrame,
} from "../../../agents/transfer/bulk/protocol";
import { BUSY_INTERVAL_MS, beatWhileBusy } from "../../../agents/transfer/message-reader";
import { busyPing, busyPingStream } from "../../../agents/transfer/protocol";

describe("busy beats", () => {
  it("busy frames are told from the result: leading ones counted, a partial one waited for, a result never empty", () => {
    const result = resultFrame({ summary: {} });
    assert.ok(result.length > 5, "an OK result with an empty summary is not a busy frame");
    assert.equal(leadingBusyFrames(Buffer.concat([BUSY_FRAME, BUSY_FRAME, result])), 2);
    assert.equal(leadingBusyFrames(BUSY_FRAME.subarray(0, 3)), 0, "a partial frame: not yet");
    assert.equal(leadingBusyFrames(result), 0);
    assert.ok(parseResult(Buffer.concat([BUSY_FRAME, result]).subarray(5)));
    assert.equal(busyIntervalFor(30_000), 10_000);
  });

  it("a busy PING names its stream; a keepalive's payload names none", () => {
    assert.equal(busyPingStream(busyPing(7)), 7);
    assert.equal(busyPingStream(busyPing(2 ** 31 - 1)), 2 ** 31 - 1);
    assert.equal(busyPingStream(Buffer.alloc(8)), null);
    assert.equal(busyPingStream(undefined), null);
    assert.equal(busyPingStream(Buffer.from("rbdB")), null);
  });

  it("the server beats only while it does not read, at the interval asked, clamped", (t) => {
    t.mock.timers.enable({ apis: ["setInterval"] });
    const state = { waiting: false, paused: false }; // the sink busy elsewhere (preparing, committing)
    let beats = 0;
    const beat = beatWhileBusy({ isPaused: () => state.paused }, state, 1, () => beats++); // 1 ms asked
    t.mock.timers.tick(BUSY_INTERVAL_MS.min - 1);
    assert.equal(beats, 0, "not every millisecond");
    t.mock.timers.tick(1);
    assert.equal(beats, 1, "the first beat at the clamped interval, not after 1 ms");
    state.waiting = true; // reading again
    t.mock.timers.tick(3 * BUSY_INTERVAL_MS.min);
    assert.equal(beats, 1, "reading: nothing sent");
    state.paused = true; // backpressure holds the socket
    t.mock.timers.tick(2 * BUSY_INTERVAL_MS.min);
    assert.equal(beats, 3, "beats while paused");
    beat.stop();
    t.mock.timers.tick(5 * BUSY_INTERVAL_MS.min);
    assert.equal(beats, 3, "none after stop()");
  });
});
