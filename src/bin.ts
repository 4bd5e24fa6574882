#!/usr/bin/env node
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as NodeServices from "@effect/platform-node/NodeServices"
import { Cause, Console, Effect, Layer, Runtime } from "effect"
import { CliError, Command } from "effect/cli"
import { inspect } from "node:util"
import { auditCommand } from "./cli/AuditCommand.ts"
import { computeCommand } from "./cli/ComputeCommand.ts"
import { configCommand } from "./cli/ConfigCommand.ts"
import { datasetsCommand } from "./cli/DatasetsCommand.ts"
import { evaluateCommand } from "./cli/EvaluateCommand.ts"
import { teacherCommand } from "./cli/TeacherCommand.ts"
import { trainCommand } from "./cli/TrainCommand.ts"
import { inferCommand } from "./cli/InferCommand.ts"
import { initCommand } from "./cli/InitCommand.ts"
import { root } from "./cli/Root.ts"
import { runCommand } from "./cli/RunCommand.ts"
import { statusCommand } from "./cli/StatusCommand.ts"
import { installOutputRedaction, registerSecretsFromEnv } from "./common/Redaction.ts"
import { toolVersion } from "./common/Version.ts"
import { ConfigLoader } from "./config/ConfigLoader.ts"
import { RunStore } from "./runs/RunStore.ts"

// Before anything can print: every byte to stdout/stderr goes through the redaction.
registerSecretsFromEnv()
installOutputRedaction()

/** An error already shown to the user: only its exit code is left to set. */
const reported = (code: number) =>
  Object.assign(new Error("reported"), { [Runtime.errorReported]: false, [Runtime.errorExitCode]: code })

const cli = root.pipe(
  Command.withSubcommands([
    initCommand,
    teacherCommand,
    trainCommand,
    inferCommand,
    auditCommand,
    evaluateCommand,
    runCommand,
    computeCommand,
    statusCommand,
    datasetsCommand,
    configCommand
  ]),
  Command.run({ version: toolVersion })
)

const AppLayer = Layer.mergeAll(ConfigLoader.layer, RunStore.layer).pipe(Layer.provideMerge(NodeServices.layer))

cli.pipe(
  Effect.catchCause((cause) => {
    const error = Cause.squash(cause)
    // effect/cli has already printed parse errors together with the usage.
    if (CliError.isCliError(error)) {
      return Effect.fail(reported(2))
    }
    if (Cause.hasInterruptsOnly(cause)) return Effect.fail(reported(130))
    const message = error instanceof Error ? error.message : String(error)
    // One line for the user; DART_DEBUG=1 adds the error beneath (file system, Docker, network), causes and stacks included.
    const beneath = process.env.DART_DEBUG === "1" && error instanceof Error && error.cause !== undefined ? `\ncaused by: ${inspect(error.cause, { depth: 10 })}` : ""
    return Console.error(`dart: error: ${message}${beneath}`).pipe(Effect.andThen(Effect.fail(reported(Runtime.getErrorExitCode(error)))))
  }),
  Effect.provide(AppLayer),
  NodeRuntime.runMain
)
