// scale-machines' sizing: up past 80% use (a sweep at half its interval is full CPU), down only when the
// smaller size stays at most 60% used, within each tier's bounds and Fly's 256 MB per shared CPU.
import assert from "node:assert/strict";
import { decideSize, type Load } from "../scale-machines/sizing.ts";

const idle: Load = { sweepLoadRatio: 0.02, sweepsMissed: 0, cpuPercent: 5, cpuCount: 1, memoryMb: 110, memoryLimitMb: 256 };

Deno.test("sizing: memory near the limit grows the machine before it is OOM-killed", () => {
  const decision = decideSize("pro", { cpus: 1, memoryMb: 256 }, { ...idle, memoryMb: 215 });
  assert.deepEqual(decision.target, { cpus: 1, memoryMb: 512 });
  assert.match(decision.reason, /memory 215 of 256 MB/);
});

Deno.test("sizing: sweeps taking most of their interval add CPUs (and the memory they need)", () => {
  const decision = decideSize("pro", { cpus: 1, memoryMb: 256 }, { ...idle, sweepLoadRatio: 0.45 });
  assert.deepEqual(decision.target, { cpus: 2, memoryMb: 512 });
  const busyCpu = decideSize("elite", { cpus: 2, memoryMb: 512 }, { ...idle, cpuPercent: 170, memoryLimitMb: 512 });
  assert.deepEqual(busyCpu.target, { cpus: 4, memoryMb: 1024 });
});

Deno.test("sizing: an idle machine goes back to its tier's base size, never below", () => {
  assert.deepEqual(decideSize("pro", { cpus: 2, memoryMb: 512 }, { ...idle, memoryLimitMb: 512 }).target, { cpus: 1, memoryMb: 256 });
  assert.equal(decideSize("pro", { cpus: 1, memoryMb: 256 }, idle).target, null);
  assert.deepEqual(
    decideSize("power", { cpus: 4, memoryMb: 2048 }, { ...idle, memoryLimitMb: 2048 }).target,
    { cpus: 2, memoryMb: 1024 },
    "one step at a time",
  );
  assert.equal(decideSize("power", { cpus: 1, memoryMb: 1024 }, { ...idle, memoryLimitMb: 1024 }).target, null);
});

Deno.test("sizing: hysteresis — between the thresholds nothing moves either way", () => {
  // 70% of 512 MB: not over 80%, and 358 MB would be 140% of 256 MB.
  assert.equal(decideSize("pro", { cpus: 1, memoryMb: 512 }, { ...idle, memoryMb: 358, memoryLimitMb: 512 }).target, null);
  // Just after a scale-up (215 of 512 MB = 42%), going back down would be 84% of 256 MB: it stays.
  assert.equal(decideSize("pro", { cpus: 1, memoryMb: 512 }, { ...idle, memoryMb: 215, memoryLimitMb: 512 }).target, null);
  // 2 CPUs at 40% (80% of one CPU after a step down) stay at 2.
  assert.equal(decideSize("pro", { cpus: 2, memoryMb: 512 }, { ...idle, cpuPercent: 80, memoryMb: 300, memoryLimitMb: 512 }).target, null);
});

Deno.test("sizing: a tier's ceiling holds however busy the machine is; free users have no machine", () => {
  const decision = decideSize("pro", { cpus: 2, memoryMb: 512 }, { ...idle, sweepLoadRatio: 0.9, memoryMb: 500, memoryLimitMb: 512 });
  assert.equal(decision.target, null);
  assert.match(decision.reason, /at the pro tier's bound/);
  assert.equal(decideSize("free", { cpus: 1, memoryMb: 256 }, idle).target, null);
});
