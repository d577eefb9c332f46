// A resumable `floe finetune --full` pre-training stage for the model-making scripts (floe-brown, floe-brown-draft).

import { existsSync } from "node:fs";
import { join } from "node:path";
import { spawn } from "node:child_process";
import { listCheckpoints } from "../src/train/checkpoint.js";
import { packageRoot } from "../src/model/builtin.js";

const ROOT = packageRoot();

/** Run the floe CLI as a child process (so that an interrupted run leaves its checkpoints for `--resume`). */
export async function floeProcess(args: string[]): Promise<void> {
  const code = `const { run } = await import(${JSON.stringify(join(ROOT, "src", "cli", "main.ts"))}); process.exitCode = await run(${JSON.stringify(args)});`;
  const child = spawn(process.execPath, ["--import", "tsx", "--input-type=module", "-e", code], { stdio: "inherit", cwd: ROOT });
  const rc = await new Promise<number | null>((res) => child.on("exit", (c) => res(c)));
  if (rc !== 0) throw new Error(`floe ${args[0]} exited with ${rc}`);
}

/** Train `init` for `steps` into `run`, resuming from its last checkpoint; a run cut before its first one starts over. */
export async function pretrain(o: { init: string; data: string; eval: string; run: string; steps: number; args: readonly string[]; log: (s: string) => void }): Promise<void> {
  const done = listCheckpoints(o.run).at(-1)?.step ?? 0;
  if (existsSync(join(o.run, "final", "model.safetensors")) && done >= o.steps) return;
  const resume = done > 0 ? ["--resume", o.run] : ["--overwrite"];
  const args = ["finetune", "--model", o.init, "--data", o.data, "--eval", o.eval, ...o.args, "--max-steps", String(o.steps), "--out", o.run, ...resume];
  o.log(`floe ${args.join(" ")}`);
  await floeProcess(args);
}
