// The functions' environment, read and checked when a request needs it (never a silent '' fallback).

export class MissingEnvError extends Error {
  constructor(readonly variable: string, detail = "is not set") {
    super(`environment variable ${variable} ${detail}`);
    this.name = "MissingEnvError";
  }
}

/** Return the variable's value, or throw MissingEnvError naming it. */
export function requireEnv(name: string): string {
  const value = Deno.env.get(name);
  if (value === undefined || value.trim() === "") throw new MissingEnvError(name);
  return value;
}

export function optionalEnv(name: string, fallback: string): string {
  const value = Deno.env.get(name);
  return value === undefined || value.trim() === "" ? fallback : value;
}

/** A positive integer from the environment, or `fallback` when unset; anything else is a config error. */
export function positiveIntEnv(name: string, fallback: number): number {
  const raw = Deno.env.get(name);
  if (raw === undefined || raw.trim() === "") return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value <= 0) {
    throw new MissingEnvError(name, `must be a positive integer, was '${raw}'`);
  }
  return value;
}

export interface SupabaseEnv {
  url: string;
  serviceRoleKey: string;
}

export function supabaseEnv(): SupabaseEnv {
  return { url: requireEnv("SUPABASE_URL"), serviceRoleKey: requireEnv("SUPABASE_SERVICE_ROLE_KEY") };
}
