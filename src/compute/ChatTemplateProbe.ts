import { Effect, Option, Schema } from "effect"
import type { ExperimentConfig } from "../config/ExperimentConfig.ts"
import { isHubModelId } from "../config/HubModels.ts"
import type { ProbeConversation, TemplateProbe } from "../domain/ChatLayout.ts"
import { TemplateProbe as TemplateProbeSchema } from "../domain/ChatLayout.ts"
import { ComputeError } from "./ComputeError.ts"
import { HF_CACHE_TARGET, hfCacheMount, trainerSpec } from "./ContainerSpecs.ts"
import { runTask } from "./DockerBackend.ts"
import { type DockerHost, redactedEnv } from "./DockerHost.ts"

const decodeProbe = Schema.decodeUnknownOption(Schema.fromJsonString(TemplateProbeSchema))

/** The probe's answer: the last output line that is one; library chatter around it is ignored. */
export const parseProbeOutput = (out: string): TemplateProbe | undefined => {
  for (const line of out.split(/\r?\n/).reverse()) {
    const t = line.trim()
    if (!t.startsWith("{")) continue
    const p = decodeProbe(t)
    if (Option.isSome(p)) return p.value
  }
  return undefined
}

/** The probe's command on `conversations`, and the quiet environment it runs in (every engine runs the same). */
export const chatTemplateCommand = (model: string, conversations: ReadonlyArray<ProbeConversation>): Array<string> =>
  ["python3", "-m", "dart_trainer.chat_layout", "--model", model, "--conversations-json", JSON.stringify({ conversations })]
export const QUIET_HF_ENV = { HF_HUB_DISABLE_PROGRESS_BARS: "1", HF_HUB_DISABLE_TELEMETRY: "1", TRANSFORMERS_VERBOSITY: "error" } as const

/**
 * Renders DART's conversations with the base model's own chat template (transformers' `apply_chat_template`, what
 * vLLM and the trainer call) in a throwaway task in the trainer image: `dart_trainer.chat_layout`. A model folder is
 * bound read-only; a hub id is read through the host's HF cache, online (only its tokenizer files are fetched) so
 * the layout is known before the weights are downloaded or any teacher request is sent.
 */
export const probeChatTemplate = (
  host: DockerHost,
  hostConfig: ExperimentConfig["compute"]["hosts"][number],
  config: ExperimentConfig,
  conversations: ReadonlyArray<ProbeConversation>
) =>
  Effect.gen(function*() {
    const model = config.model.base
    const hub = !model.startsWith("/") && isHubModelId(model)
    const mount = hfCacheMount(config)
    const endpoint = process.env.HF_ENDPOINT
    const token = redactedEnv("HF_TOKEN")
    const { out, exitCode } = yield* runTask(host, config.run.exp_id, "chat-template", {
      image: trainerSpec(config, hostConfig, host.listenHost).image,
      cmd: chatTemplateCommand(model, conversations),
      binds: [...mount.binds, ...(model.startsWith("/") ? [{ source: model, target: model, readOnly: true }] : [])],
      volumes: mount.volumes,
      env: {
        HOME: "/tmp",
        HF_HOME: HF_CACHE_TARGET,
        HF_HUB_OFFLINE: hub ? "0" : "1",
        ...QUIET_HF_ENV,
        ...(hub && endpoint !== undefined && endpoint !== "" ? { HF_ENDPOINT: endpoint } : {})
      },
      secretEnv: hub && token !== undefined ? { HF_TOKEN: token } : {},
      user: undefined,
      network: hub ? "host" : "none",
      // Read through the attached stream: the answer is one long line.
      onLine: () => {}
    }, [2])
    const probe = parseProbeOutput(out)
    if (probe === undefined) {
      return yield* new ComputeError({
        host: host.name,
        message: `the probe said nothing readable (exit ${exitCode}): ${out.trim().split("\n").slice(-4).join(" | ")}`
      })
    }
    return probe
  })
