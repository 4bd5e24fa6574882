import { Effect, Layer, Stream } from "effect"
import { Compute } from "../../src/compute/Compute.ts"

/** A compute port for tests whose stages never start anything: every call is a defect naming itself. */
const never = (what: string) => () => Effect.die(new Error(`compute.${what} was called in a test that starts nothing`))

export const noCompute = Layer.succeed(Compute, Compute.of({
  backend: "none",
  hostNames: [],
  placement: never("placement"),
  fleetHosts: never("fleetHosts"),
  vllm: never("vllm"),
  classifiers: never("classifiers"),
  trainer: never("trainer"),
  putAdapter: never("putAdapter"),
  getPath: never("getPath"),
  replicaEvents: () => Stream.empty,
  reach: never("reach"),
  probeHost: never("probeHost"),
  imagePresent: never("imagePresent"),
  checkHubModels: never("checkHubModels"),
  probeChatTemplate: never("probeChatTemplate"),
  status: never("status"),
  down: never("down"),
  removeOrphans: never("removeOrphans")
}))
