#!/usr/bin/env node
// The `floe` command: runs the compiled CLI (npm install builds it into dist/).
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const main = new URL('../dist/src/cli/main.js', import.meta.url);
if (!existsSync(fileURLToPath(main))) {
  console.error('floe is not built: run `npm install` (or `npm run build`) in the floe package directory');
  process.exit(1);
}
// A reader that goes away (`floe generate | head -1`) ends floe quietly, as SIGPIPE ends cat or seq (exit 141 =
// 128 + SIGPIPE), instead of an unhandled 'error' event's stack trace (Node ignores SIGPIPE, so the write fails EPIPE).
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (e) => {
    if (e.code === 'EPIPE') process.exit(141);
    throw e;
  });
}
const { run } = await import(main.href);
process.exitCode = await run(process.argv.slice(2));
