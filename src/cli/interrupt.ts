// Ctrl-C during training: the first asks the run to write a checkpoint and stop (exit code 130);
// a second one exits at once.
import { LoratuneError } from "../errors.js";

export async function interruptible(run: (signal: AbortSignal) => Promise<void>): Promise<number> {
  const controller = new AbortController();
  const onSigint = () => {
    if (controller.signal.aborted) process.exit(130);
    process.stderr.write("\nloratune: stopping after this step and writing a checkpoint (Ctrl-C again to quit now)\n");
    controller.abort();
  };
  process.on("SIGINT", onSigint);
  try {
    await run(controller.signal);
    return 0;
  } catch (e) {
    if (controller.signal.aborted && e instanceof LoratuneError) {
      process.stderr.write(`loratune: ${e.message}\n${e.hint ? `  ${e.hint}\n` : ""}`);
      return 130;
    }
    throw e;
  } finally {
    process.off("SIGINT", onSigint);
  }
}
