import { Config, Effect, Option, Redacted } from "effect"

/**
 * The environment variable that holds a provider's API key, unless the config names another; null for the
 * run's own vLLM server, which needs none (or the per-run key `dart run` starts it with, passed directly).
 */
export const defaultKeyVariable = (provider: "deepseek" | "openai" | "compatible" | "vllm") =>
  provider === "vllm" ? null : provider === "deepseek" ? "DEEPSEEK_API_KEY" : "OPENAI_API_KEY"

/** An API key from the environment only, kept `Redacted` until the HTTP call. */
export const apiKeyFromEnv = (variable: string): Effect.Effect<Option.Option<Redacted.Redacted<string>>> =>
  Config.option(Config.Redacted(variable)).pipe(Effect.orElseSucceed(() => Option.none()))
