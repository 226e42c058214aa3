// scale-machines' sizing: up past 80% use (a sweep at half its interval is full CPU, measured or predicted
// for the traders a worker holds), down only when the smaller size stays at most 60% used, within each
// tier's bounds and Fly's 256 MB per shared CPU. A machine asking for its own sizing: only its own, with an
// empty body, at most once per interval.
import assert from "node:assert/strict";
import { handler, SIZING_REQUEST_INTERVAL_SECS } from "../scale-machines/handler.ts";
import { decideSize, type Load } from "../scale-machines/sizing.ts";
import { createMachine, createUser, deleteUser, env, json, post, sql, stackTest } from "./helpers.ts";

const URL = "http://local/scale-machines";

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

Deno.test("sizing: the sweeps predicted for traders the worker holds scale it up before they run", () => {
  const decision = decideSize("pro", { cpus: 1, memoryMb: 256 }, { ...idle, predictedSweepLoadRatio: 0.83 });
  assert.deepEqual(decision.target, { cpus: 2, memoryMb: 512 });
  assert.match(decision.reason, /^CPU 166% used \(sweeps predicted at 83% of their interval for all its traders\)/);
  // A prediction the machine carries is no reason to move, and one it would not carry keeps it from going down.
  assert.equal(decideSize("pro", { cpus: 1, memoryMb: 256 }, { ...idle, predictedSweepLoadRatio: 0.3 }).target, null);
  const busy = { ...idle, predictedSweepLoadRatio: 0.2, memoryMb: 200, memoryLimitMb: 512 };
  assert.equal(decideSize("pro", { cpus: 2, memoryMb: 512 }, busy).target, null, "0.2 of 2 CPUs is 80% of one");
});

stackTest("scale-machines: a machine has its own machine evaluated, once per interval", async () => {
  const user = await createUser();
  try {
    const machineId = await createMachine(user);
    const token = await user.machineJwt(machineId);

    const first = await handler(post(URL, {}, token));
    const firstBody = await json(first);
    const second = await handler(post(URL, {}, token));
    const secondBody = await json(second);

    // The stand-in Fly has no such machine: no load figures, nothing changes.
    assert.equal(first.status, 200, JSON.stringify(firstBody));
    assert.equal(firstBody.machine.machineId, machineId);
    assert.equal(firstBody.machine.status, "unreachable");
    assert.equal(second.status, 429);
    assert.equal(secondBody.error.code, "rate_limited");
    assert.equal(second.headers.get("retry-after"), String(SIZING_REQUEST_INTERVAL_SECS));
    const [row] = await sql`select sizing_requested_at from public.fly_machines where machine_id = ${machineId}`;
    assert.ok(row.sizing_requested_at instanceof Date);
    assert.equal((await sql`select count(*)::int as n from public.machine_resizes where machine_id = ${machineId}`)[0].n, 0);
  } finally {
    await deleteUser(user);
  }
});

stackTest("scale-machines: a machine names no user, size, cooldown or timeout; users may not ask", async () => {
  const [alice, bob, carol] = [await createUser(), await createUser(), await createUser()];
  try {
    const token = await alice.machineJwt(await createMachine(alice));
    const stopped = await carol.machineJwt(await createMachine(carol, "stopped"));
    const answers = [
      await handler(post(URL, { userIds: [bob.id] }, token)),
      await handler(post(URL, { cooldownSecs: 0 }, token)),
      await handler(post(URL, { dryRun: false }, token)),
      await handler(post(URL, {}, alice.jwt)),
    ];
    const bodies = await Promise.all(answers.map(json));

    assert.deepEqual(answers.map((answer) => answer.status), [403, 403, 403, 403]);
    assert.ok(bodies.every((body) => body.error.code === "forbidden"), JSON.stringify(bodies));
    assert.match(bodies[0].error.message, /only for its own sizing/);
    const notRunning = await handler(post(URL, {}, stopped));
    assert.equal(notRunning.status, 409);
    assert.equal((await json(notRunning)).error.code, "machine_not_running");
  } finally {
    await Promise.all([alice, bob, carol].map(deleteUser));
  }
});

stackTest("scale-machines: a machine whose resize is still under way is told so (it keeps its traders held)", async () => {
  const user = await createUser();
  try {
    const machineId = await createMachine(user);
    await sql`
      insert into public.machine_resizes (fly_machine_row_id, user_id, machine_id, from_cpus, from_memory_mb, to_cpus, to_memory_mb, reason)
      select id, user_id, machine_id, 1, 256, 2, 512, 'sweeps predicted' from public.fly_machines where machine_id = ${machineId}`;

    const answer = await json(await handler(post(URL, {}, await user.machineJwt(machineId))));

    assert.equal(answer.machine.status, "resizing", JSON.stringify(answer));
  } finally {
    await deleteUser(user);
  }
});
