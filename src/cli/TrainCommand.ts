import { Effect, Option } from "effect"
import { Command, Flag } from "effect/cli"
import { normalizeStage, TrainStageError } from "../pipeline/TrainStage.ts"
import { parseOversample, type Recipe } from "../training/TrainingSet.ts"
import { trainStage } from "../pipeline/Stages.ts"
import { withCompute } from "./WithCompute.ts"
import { loadRunConfig } from "./Root.ts"

export const trainCommand = Command.make("train", {
  stage: Flag.Literals("stage", ["mdac", "dart", "mdac_h", "dart_h"]).pipe(Flag.withDescription("mdac (= dart): distill targets; mdac_h (= dart_h): distill + repair, continuing DART")),
  adapterName: Flag.String("adapter-name").pipe(Flag.withDescription("name of the adapter: runs/{EXP_ID}/adapters/{NAME}/final/")),
  recipe: Flag.Literals("recipe", ["distill", "mix", "repair_only"]).pipe(Flag.withDescription("training rows (default: distill for dart, mix for dart_h)"), Flag.optional),
  initAdapter: Flag.String("init-adapter").pipe(Flag.withDescription("adapter folder to continue from (trainable), e.g. runs/$EXP_ID/adapters/DART/final"), Flag.optional),
  repairOversample: Flag.String("repair-oversample").pipe(Flag.withDescription("repeats per severity, e.g. mild=1,moderate=2,severe=3,extreme=4 (default: training.repair_oversample)"), Flag.optional),
  epochs: Flag.Int("epochs").pipe(
    Flag.filter((n) => n >= 1, (n) => `--epochs ${n}: expected a whole number of epochs, 1 or more`),
    Flag.withDescription("override training.epochs (a whole number, 1 or more)"),
    Flag.optional
  )
}, (args) =>
  Effect.gen(function*() {
    const resolved = yield* loadRunConfig
    const stage = normalizeStage(args.stage)!
    const weights = Option.match(args.repairOversample, {
      onNone: () => resolved.config.training.repair_oversample,
      onSome: (text) => parseOversample(text, resolved.config.training.repair_oversample)
    })
    if (typeof weights === "string") return yield* new TrainStageError({ message: weights })
    const recipe: Recipe = Option.getOrElse(args.recipe, () => (stage === "dart" ? "distill" : "mix"))
    yield* withCompute(resolved.config, trainStage(resolved, {
      stage,
      adapterName: args.adapterName,
      recipe,
      initAdapter: Option.getOrUndefined(args.initAdapter),
      weights,
      epochs: Option.getOrUndefined(args.epochs)
    }))
  })).pipe(
    Command.withDescription(
      "Steps 3 and 7: LoRA/QLoRA training on the trainer sidecar (gRPC; compute.trainer.endpoint), with severity-weighted repair mixing; " +
        "the adapter lands in runs/{EXP_ID}/adapters/{NAME}/final/ with a training record."
    ),
    Command.withExamples([
      { command: "dart train --stage mdac --adapter-name DART", description: "step 3" },
      { command: "dart train --stage mdac_h --recipe mix --adapter-name DART_H --init-adapter runs/demo/adapters/DART/final --repair-oversample mild=1,moderate=2,severe=3,extreme=4 --epochs 3", description: "step 7" }
    ])
  )
