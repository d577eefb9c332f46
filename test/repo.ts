// Paths into the repository (models/, test/fixtures/, bin/, README.md, ...) for the tests. `npm test` runs the tests
// compiled, from dist/test/; a file run on its own through tsx runs from test/. A path written relative to the test
// file's own URL would point into dist/ in the first case, so every such path is made from the root found here.
import { sep } from 'node:path';
import { pathToFileURL } from 'node:url';
import { packageRoot } from '../src/model/builtin.js';

/** True when the tests run compiled (dist/test/*.js), as under `npm test`; false from test/*.ts through tsx. */
export const COMPILED = import.meta.url.endsWith('.js');
/** The repository root, without a trailing separator (the package root floe finds its built-in models from). */
export const ROOT = packageRoot();

/** `rel` (posix, from the root; a trailing '/' is kept) as a file path. */
export const repoPath = (rel: string): string => ROOT + sep + rel;

/** `rel` (posix, from the root; a trailing '/' is kept) as a file: URL. */
export const repoUrl = (rel: string): URL => pathToFileURL(repoPath(rel));

/**
 * The node arguments that run the test helper script `rel` (a .ts under test/, from the root) in a child process:
 * its compiled .js under `npm test`, the .ts through tsx (~0.5 s more a start) when the tests run from test/.
 */
export function nodeScript(rel: string): string[] {
  return COMPILED ? [repoPath('dist/' + rel.replace(/\.ts$/, '.js'))] : ['--import', 'tsx', repoPath(rel)];
}
