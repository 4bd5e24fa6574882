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
import { reportCommand } from "./cli/ReportCommand.ts"
import { root } from "./cli/Root.ts"
import { runCommand } from "./cli/RunCommand.ts"
import { statusCommand } from "./cli/StatusCommand.ts"
import { escapeControls, installOutputRedaction, registerSecretsFromEnv } from "./common/Redaction.ts"
import { toolVersion } from "./common/Version.ts"
import { ConfigLoader } from "./config/ConfigLoader.ts"
import { RunStore } from "./runs/RunStore.ts"

// Before anything can print: every byte to stdout/stderr goes through the redaction.
registerSecretsFromEnv()
installOutputRedaction()

// runMain interrupts the program on SIGINT and SIGTERM alike and exits 130; the shell convention is 128 + the
// signal's number, so a SIGTERM (a scheduler, `kill`, `docker stop`) exits 143. Clean-up runs the same for both.
let signalled: NodeJS.Signals | undefined
const noteSignal = (signal: NodeJS.Signals) => void (signalled ??= signal)
process.once("SIGINT", noteSignal)
process.once("SIGTERM", noteSignal)
const interruptedCode = () => (signalled === "SIGTERM" ? 143 : 130)

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
    reportCommand,
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
    if (Cause.hasInterruptsOnly(cause)) return Effect.fail(reported(interruptedCode()))
    const message = error instanceof Error ? error.message : String(error)
    // One line for the user; DART_DEBUG=1 adds the error beneath (file system, Docker, network), causes and stacks included.
    const beneath = process.env.DART_DEBUG === "1" && error instanceof Error && error.cause !== undefined ? `\ncaused by: ${inspect(error.cause, { depth: 10 })}` : ""
    // Messages may quote a server's body: its control characters are shown, never obeyed by the terminal.
    return Console.error(escapeControls(`dart: error: ${message}${beneath}`)).pipe(Effect.andThen(Effect.fail(reported(Runtime.getErrorExitCode(error)))))
  }),
  Effect.provide(AppLayer),
  NodeRuntime.runMain({
    teardown: (exit, onExit) => {
      process.removeListener("SIGINT", noteSignal)
      process.removeListener("SIGTERM", noteSignal)
      Runtime.defaultTeardown(exit, (code) => {
        // runMain leaves a success to the event loop's end. A connection a library left open (a WebSocket to a
        // Kubernetes API server, a socket nobody closed) would keep a finished `dart run` waiting forever: after a
        // grace it exits anyway. The timer is unref'd, so a process that ends by itself never waits for it.
        if (code === 0) {
          setTimeout(() => {
            if (process.env.DART_DEBUG === "1") process.stderr.write(`dart: debug: exiting with resources still open: ${process.getActiveResourcesInfo().join(", ")}\n`)
            process.exit(0)
          }, 3000).unref()
        }
        onExit(code === 130 ? interruptedCode() : code)
      })
    }
  })
)
