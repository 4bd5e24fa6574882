/**
 * Tasks: the registry. A task is one module (src/tasks/) and one line here; `dart infer --task`, `dart audit` and
 * `dart evaluate` find it by name, and a test may provide a longer list through {@link TaskRegistry}.
 */
import { Context, Effect } from "effect"
import { continuationTask } from "./ContinuationTask.ts"
import { dartTask, mcTask } from "./DiffAwareTasks.ts"
import { openEndedTask } from "./OpenEndedTask.ts"
import { findTask, type Task, TaskInputError } from "./Task.ts"

export const builtinTasks: ReadonlyArray<Task> = [
  dartTask,
  mcTask,
  continuationTask,
  openEndedTask
]

export const TaskRegistry = Context.Reference<ReadonlyArray<Task>>("dart/TaskRegistry", { defaultValue: () => builtinTasks })

/** The registered task of that name, or an error listing the known ones. */
export const taskNamed = (name: string) =>
  Effect.gen(function*() {
    const tasks = yield* TaskRegistry
    const task = findTask(tasks, name)
    if (task === undefined) return yield* Effect.fail(new TaskInputError(`unknown task "${name}" (known: ${tasks.map((t) => t.name).join(", ")})`))
    return task
  })
