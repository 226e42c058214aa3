// The size a worker machine should have for its load, within its tier's bounds, with hysteresis: scale up
// when a resource is more than 80% used (a signal sweep counts as fully used CPU at half its interval),
// scale down only when the smaller size would still be at most 60% used, so no size sits at both edges.
// The sweeps counted are those measured and those the worker predicts for all its traders, the ones it
// holds until this answers included (a machine that just got traders asks before it runs them).

export interface Size {
  cpus: number;
  memoryMb: number;
}

/** What a worker's /metrics reports under `load`. */
export interface Load {
  sweepLoadRatio: number;
  sweepsMissed: number;
  cpuPercent: number;
  cpuCount: number;
  memoryMb: number;
  memoryLimitMb: number | null;
  /** The sweep ratio every trader the worker has, running or held, would take on this machine, while it
   * holds new traders until this answers (null otherwise; absent from workers older than the prediction). */
  predictedSweepLoadRatio?: number | null;
}

// Pro 1-2 vCPU / 256-512 MB, Elite up to 4 / 1 GB, Power up to 8 / 2 GB; each starts at its provisioned size.
export const TIER_BOUNDS: Readonly<Record<string, { min: Size; max: Size }>> = {
  pro: { min: { cpus: 1, memoryMb: 256 }, max: { cpus: 2, memoryMb: 512 } },
  elite: { min: { cpus: 1, memoryMb: 512 }, max: { cpus: 4, memoryMb: 1024 } },
  power: { min: { cpus: 1, memoryMb: 1024 }, max: { cpus: 8, memoryMb: 2048 } },
};

const CPU_STEPS = [1, 2, 4, 8];
const MEMORY_STEPS_MB = [256, 512, 1024, 2048];
const SCALE_UP_AT = 0.8;
const SCALE_DOWN_BELOW = 0.6;
// A sweep that takes half its interval leaves no room for a slow candle: that is full use.
const SWEEP_FULL_AT = 0.5;
// Fly's shared CPUs come with at least 256 MB each.
const MIN_MEMORY_MB_PER_CPU = 256;

export interface Decision {
  target: Size | null;
  reason: string;
}

function step(steps: number[], current: number, direction: 1 | -1): number {
  const index = steps.findIndex((value) => value >= current);
  const at = index === -1 ? steps.length - 1 : index;
  return steps[Math.max(0, Math.min(steps.length - 1, at + direction))];
}

const clamp = (value: number, min: number, max: number) => Math.max(min, Math.min(max, value));
const percent = (fraction: number) => `${Math.round(fraction * 100)}%`;

export function decideSize(tier: string, current: Size, load: Load): Decision {
  const bounds = TIER_BOUNDS[tier];
  if (!bounds) return { target: null, reason: `the ${tier} tier has no machine size range` };
  const predicted = load.predictedSweepLoadRatio ?? 0;
  const sweepRatio = Math.max(load.sweepLoadRatio, predicted);
  const cpuUse = Math.max(load.cpuPercent / (100 * current.cpus), sweepRatio / SWEEP_FULL_AT);
  const memoryUse = load.memoryMb / (load.memoryLimitMb ?? current.memoryMb);
  let cpus = current.cpus;
  let memoryMb = current.memoryMb;
  const why: string[] = [];
  if (cpuUse > SCALE_UP_AT) {
    cpus = step(CPU_STEPS, current.cpus, 1);
    const sweeps = predicted > load.sweepLoadRatio
      ? `sweeps predicted at ${percent(predicted)} of their interval for all its traders`
      : `sweeps at ${percent(load.sweepLoadRatio)} of their interval`;
    why.push(`CPU ${percent(cpuUse)} used (${sweeps})`);
  } else {
    const fewer = step(CPU_STEPS, current.cpus, -1);
    if (fewer < current.cpus && (cpuUse * current.cpus) / fewer <= SCALE_DOWN_BELOW) {
      cpus = fewer;
      why.push(`CPU ${percent(cpuUse)} used`);
    }
  }
  if (memoryUse > SCALE_UP_AT) {
    memoryMb = step(MEMORY_STEPS_MB, current.memoryMb, 1);
    why.push(`memory ${Math.round(load.memoryMb)} of ${current.memoryMb} MB`);
  } else {
    const less = step(MEMORY_STEPS_MB, current.memoryMb, -1);
    if (less < current.memoryMb && load.memoryMb / less <= SCALE_DOWN_BELOW) {
      memoryMb = less;
      why.push(`memory ${Math.round(load.memoryMb)} of ${current.memoryMb} MB`);
    }
  }
  cpus = clamp(cpus, bounds.min.cpus, bounds.max.cpus);
  memoryMb = clamp(Math.max(memoryMb, cpus * MIN_MEMORY_MB_PER_CPU), bounds.min.memoryMb, bounds.max.memoryMb);
  if (cpus === current.cpus && memoryMb === current.memoryMb) {
    return { target: null, reason: why.length ? `at the ${tier} tier's bound: ${why.join("; ")}` : "load within range" };
  }
  return { target: { cpus, memoryMb }, reason: why.join("; ") || "size outside the tier's range" };
}
