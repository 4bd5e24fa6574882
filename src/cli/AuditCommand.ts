import { Effect, Option } from "effect"
import { Command, Flag } from "effect/cli"
import type { ExperimentConfig } from "../config/ExperimentConfig.ts"
import { severities } from "../domain/Severity.ts"
import { AuditError } from "../pipeline/AuditStage.ts"
import * as path from "node:path"
import { auditStage } from "../pipeline/Stages.ts"
import { withCompute } from "./WithCompute.ts"
import { loadRunConfig } from "./Root.ts"

const delta = (name: string, what: string) => Flag.Finite(name).pipe(Flag.withDescription(`override audit.${name.replace("-", "_")} (${what})`), Flag.optional)

export const auditCommand = Command.make("audit", {
  pairedInput: Flag.String("paired-input").pipe(Flag.withDescription("paired prediction rows of `dart infer --paired` (outputs.jsonl)")),
  aName: Flag.String("a-name").pipe(Flag.withDescription("model A, the baseline (e.g. M0); not for continuation or open_ended predictions, whose every answer is scored"), Flag.optional),
  bName: Flag.String("b-name").pipe(Flag.withDescription("model B, audited for harm drift against A (e.g. DART)"), Flag.optional),
  runName: Flag.String("run-name").pipe(Flag.withDescription("outputs go to runs/{EXP_ID}/audit/{RUN}/")),
  mildDelta: delta("mild-delta", "mild when delta > this"),
  moderateDelta: delta("moderate-delta", "moderate when delta >= this"),
  severeDelta: delta("severe-delta", "severe when delta >= this"),
  extremeDelta: delta("extreme-delta", "extreme when delta >= this"),
  absFloors: Flag.Boolean("abs-floors").pipe(Flag.withDescription("absolute floors on B's score (--no-abs-floors turns them off; default audit.abs_floors.enabled)"), Flag.optional),
  minSeverity: Flag.Literals("min-severity", severities).pipe(Flag.withDescription("lowest severity that enters the pool (default audit.min_severity)"), Flag.optional),
  useLlmJudge: Flag.Boolean("use-llm-judge").pipe(Flag.withDescription("ask the comparative LLM judge (--no-use-llm-judge: classifiers only; default audit.llm_judge.enabled)"), Flag.optional),
  llmJudgeMode: Flag.Literals("llm-judge-mode", ["validate", "primary", "supplement"]).pipe(
    Flag.withDescription("validate: the judge decides, classifier-only triggers are reported as overridden; primary: the judge alone; supplement: classifier and judge must agree"),
    Flag.optional
  ),
  llmJudgeProvider: Flag.Literals("llm-judge-provider", ["deepseek", "openai", "compatible"]).pipe(Flag.withDescription("override judge.provider"), Flag.optional),
  llmJudgeModel: Flag.String("llm-judge-model").pipe(Flag.withDescription("override judge.model"), Flag.optional)
}, (args) =>
  Effect.gen(function*() {
    const resolved = yield* loadRunConfig
    const c = resolved.config
    const get = Option.getOrUndefined
    const audit: ExperimentConfig["audit"] = {
      ...c.audit,
      mild_delta: get(args.mildDelta) ?? c.audit.mild_delta,
      moderate_delta: get(args.moderateDelta) ?? c.audit.moderate_delta,
      severe_delta: get(args.severeDelta) ?? c.audit.severe_delta,
      extreme_delta: get(args.extremeDelta) ?? c.audit.extreme_delta,
      abs_floors: { ...c.audit.abs_floors, enabled: get(args.absFloors) ?? c.audit.abs_floors.enabled },
      min_severity: get(args.minSeverity) ?? c.audit.min_severity,
      llm_judge: { enabled: get(args.useLlmJudge) ?? c.audit.llm_judge.enabled, mode: get(args.llmJudgeMode) ?? c.audit.llm_judge.mode }
    }
    for (const [k, v] of Object.entries({ mild_delta: audit.mild_delta, moderate_delta: audit.moderate_delta, severe_delta: audit.severe_delta, extreme_delta: audit.extreme_delta })) {
      if (!(v >= 0 && v <= 1)) return yield* new AuditError({ message: `--${k.replace("_", "-")} ${v}: expected a number between 0 and 1` })
    }
    const judge: ExperimentConfig["judge"] = {
      ...c.judge,
      provider: get(args.llmJudgeProvider) ?? c.judge.provider,
      model: get(args.llmJudgeModel) ?? c.judge.model
    }
    const runDir = path.join(c.run.runs_dir, c.run.exp_id)
    // The configured /classify endpoints, or classifier containers started for this command and removed after it.
    yield* withCompute(c, auditStage({ ...resolved, config: { ...c, audit, judge } }, {
      pairedInput: args.pairedInput,
      aName: get(args.aName),
      bName: get(args.bName),
      runName: args.runName,
      judgeMode: audit.llm_judge.enabled ? audit.llm_judge.mode : null
    }, runDir))
  })).pipe(
    Command.withDescription(
      "Step 5: harm-drift audit of B against A. Toxicity and hate classifiers (vLLM /classify) score both outputs on the full output and " +
        "the analysis only; severity bins from the deltas; the comparative LLM judge (durable ledger: a rerun never asks twice). " +
        "Writes scores.jsonl, regression_pool.jsonl and summary.json to runs/{EXP_ID}/audit/{RUN}/. Predictions of task continuation or open_ended " +
        "are scored answer by answer instead (classifiers on the answer and on prompt + answer; the judge's label for HateCheck and open-ended answers). Exit 3: judge budget reached; 4: pairs failed (rerun retries them)."
    ),
    Command.withExamples([{
      command: "dart audit --paired-input runs/demo/predictions/primary_val_off_M0_vs_DART/outputs.jsonl --a-name M0 --b-name DART " +
        "--run-name audit_M0_vs_DART --mild-delta 0.01 --no-abs-floors --use-llm-judge --llm-judge-mode validate --llm-judge-provider deepseek --llm-judge-model deepseek-chat",
      description: "the paper's audit (on the val split)"
    }])
  )
