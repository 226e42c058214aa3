// update-machines: batch planning per strategy, and the request checks (operators only, a valid body).
import assert from "node:assert/strict";
import { handler, planBatches } from "../update-machines/handler.ts";
import { createUser, deleteUser, env, json, post, stackTest } from "./helpers.ts";

const URL = "http://local/update-machines";

Deno.test("planBatches: rolling chunks by maxUnavailable, canary goes first alone, immediate is one batch", () => {
  const ids = [1, 2, 3, 4, 5, 6, 7];
  assert.deepEqual(planBatches(ids, "rolling", 3), [[1, 2, 3], [4, 5, 6], [7]]);
  assert.deepEqual(planBatches(ids, "canary", 3), [[1], [2, 3, 4], [5, 6, 7]]);
  assert.deepEqual(planBatches(ids, "immediate", 3), [ids]);
  assert.deepEqual(planBatches([], "rolling", 3), []);
});

stackTest("update-machines: only operators, and every field is checked", async () => {
  const user = await createUser();
  try {
    const service = env("SUPABASE_SERVICE_ROLE_KEY");
    const asUser = await handler(post(URL, { image: "registry.fly.io/x:1" }, user.jwt));
    assert.equal(asUser.status, 403);
    await asUser.body?.cancel();
    // The body is judged before the caller's role: an invalid one is a 400 whoever sends it.
    const invalidAsUser = await handler(post(URL, { image: "has space:1" }, user.jwt));
    assert.equal(invalidAsUser.status, 400);
    assert.match((await json(invalidAsUser)).error.message, /^image is required/);
    const bad: Record<string, unknown>[] = [
      {},
      { image: "has space:1" },
      { image: "r/x:1", maxUnavailable: 0 },
      { image: "r/x:1", strategy: "bluegreen" },
      { image: "r/x:1", userIds: [] },
      { image: "r/x:1", deadlineSecs: 5 },
      { image: "r/x:1", healthTimeoutSecs: 0 },
      { image: "r/x:1", surprise: true },
    ];
    for (const body of bad) {
      const response = await handler(post(URL, body, service));
      assert.equal(response.status, 400, JSON.stringify(body));
      assert.equal((await json(response)).error.code, "invalid_body");
    }
  } finally {
    await deleteUser(user);
  }
});

stackTest("update-machines: a dry run for users without machines plans nothing", async () => {
  const user = await createUser();
  try {
    const response = await handler(post(URL, { image: "r/x:1", dryRun: true, userIds: [user.id] }, env("SUPABASE_SERVICE_ROLE_KEY")));
    const body = await json(response);
    assert.equal(response.status, 200);
    assert.deepEqual(body.summary, { total: 0, updated: 0, failed: 0, skipped: 0, pending: 0, rolledBack: 0, rollbackFailed: 0 });
    assert.equal(body.dryRun, true);
  } finally {
    await deleteUser(user);
  }
});
