// Random training data for the pipeline fine-tuning tests: fresh sentences each run, in two JSONL shapes.

import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

export function randomData(dir: string, n: number): string {
  const words = ['the', 'jury', 'said', 'county', 'election', 'city', 'court', 'mayor', 'of', 'in', 'was', 'and', 'new', 'state', 'report', 'that'];
  const sent = () => Array.from({ length: 3 + Math.floor(Math.random() * 8) }, () => words[Math.floor(Math.random() * words.length)]).join(' ');
  const lines = Array.from({ length: n }, (_, i) => JSON.stringify(i % 2 ? { text: sent() + '.' } : { prompt: sent() + '?', completion: ' ' + sent() }));
  const p = join(dir, `data-${Math.random().toString(36).slice(2)}.jsonl`);
  writeFileSync(p, lines.join('\n') + '\n');
  return p;
}
