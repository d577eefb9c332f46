// Runs the floe CLI from the TypeScript sources (under tsx), so the serving benchmark never measures a stale dist/.
import { run } from '../src/cli/main.js';

process.exitCode = await run(process.argv.slice(2));
