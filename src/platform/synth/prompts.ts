// Prompt files of the synth methods: data/synth/<method>/<name>.txt (or --prompts DIR/<method>/<name>.txt), {{var}} filled in.

import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

export class PromptSet {
  private readonly cache = new Map<string, string>();
  constructor(readonly dirs: readonly string[]) {} // searched in order: --prompts first, then the shipped data/synth

  /** The text of `<method>/<name>.txt` from the first directory that has it. */
  text(method: string, name: string): string {
    const key = `${method}/${name}`;
    let t = this.cache.get(key);
    if (t === undefined) {
      const file = this.dirs.map((d) => join(d, method, `${name}.txt`)).find((f) => existsSync(f));
      if (!file) throw new Error(`no prompt file ${method}/${name}.txt in ${this.dirs.join(' or ')}`);
      t = readFileSync(file, 'utf8');
      this.cache.set(key, t);
    }
    return t;
  }

  /** text() with every {{var}} replaced; a variable without a value is an error naming the file. */
  fill(method: string, name: string, vars: Readonly<Record<string, string>>): string {
    return this.text(method, name).replace(/\{\{\s*(\w+)\s*\}\}/g, (_, v: string) => {
      if (!(v in vars)) throw new Error(`${method}/${name}.txt uses {{${v}}}, which this method does not provide (it has ${Object.keys(vars).join(', ')})`);
      return vars[v]!;
    }).trim();
  }
}
