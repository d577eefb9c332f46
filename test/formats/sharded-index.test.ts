// Sharded checkpoints: what model.safetensors.index.json's weight_map says is checked against the shards, and a
// mismatch is an error naming the index (and the shard it concerns).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { loadModel } from '../../src/formats/load.js';
import { makeTinyHf } from './fixtures.js';

/** A tiny sharded checkpoint, its index path and weight_map entries (in file order). */
function sharded() {
  const tiny = makeTinyHf({ seed: 3, shardBytes: 20000 });
  const index = path.join(tiny.dir, 'model.safetensors.index.json');
  const j = JSON.parse(fs.readFileSync(index, 'utf8')) as { metadata: unknown; weight_map: Record<string, string> };
  return { dir: tiny.dir, index, metadata: j.metadata, entries: Object.entries(j.weight_map) };
}
/** An index written with its keys as given: JSON.stringify of an object cannot hold a "__proto__" key. */
function writeIndex(index: string, metadata: unknown, entries: readonly (readonly [string, string])[]): void {
  fs.writeFileSync(index, `{"metadata":${JSON.stringify(metadata)},"weight_map":{${entries.map(([k, v]) => `${JSON.stringify(k)}:${JSON.stringify(v)}`).join(',')}}}`);
}

test('weight_map: a "__proto__" key is a tensor name like any other (one no shard holds is refused)', async () => {
  const s = sharded();
  (await loadModel(s.dir)).dispose();
  const shard = s.entries[0]![1];
  writeIndex(s.index, s.metadata, [...s.entries, ['__proto__', shard]]);
  await assert.rejects(loadModel(s.dir), (e: Error) => e.constructor === Error && e.message.includes('"__proto__"') && e.message.includes(shard));
  // mapped to a shard no other tensor is in, that shard is read too
  const lone = path.join(s.dir, 'lone.safetensors');
  fs.copyFileSync(path.join(s.dir, shard), lone);
  writeIndex(s.index, s.metadata, [...s.entries, ['__proto__', 'lone.safetensors']]);
  await assert.rejects(loadModel(s.dir), (e: Error) => e.message.includes('lone.safetensors'));
});

test('weight_map naming a shard that does not hold the tensor, or a missing shard: the error names the index and the shard in full, names cut short', async () => {
  const s = sharded();
  const [name, own] = s.entries.find(([, f]) => f !== s.entries[0]![1])!;
  const other = s.entries[0]![1];
  const cases: [readonly (readonly [string, string])[], string][] = [
    // a tensor no shard holds
    [[...s.entries, ['model.layers.0.mlp.up_proj.weight_typo', own]], `${path.join(s.dir, own)}: tensor "model.layers.0.mlp.up_proj.weight_typo" listed in ${s.index} is missing from this shard`],
    // a tensor another shard holds
    [s.entries.map(([k, f]) => [k, k === name ? other : f]), `${s.index}: tensor ${JSON.stringify(name)} is mapped to ${path.join(s.dir, other)} but found in ${path.join(s.dir, own)}`],
    // a shard that is not there
    [s.entries.map(([k, f]) => [k, k === name ? 'model-00099-of-00099.safetensors' : f]), `${s.index}: shard ${path.join(s.dir, 'model-00099-of-00099.safetensors')} listed in weight_map does not exist`],
    // a 3000-character name, cut short
    [s.entries.map(([k, f]) => [k, k === name ? `${'x'.repeat(3000)}.safetensors` : f]), `${s.index}: shard ${path.join(s.dir, 'x'.repeat(100))}... (3012 chars) listed in weight_map does not exist`],
  ];
  for (const [entries, want] of cases) {
    writeIndex(s.index, s.metadata, entries);
    await assert.rejects(loadModel(s.dir), (e: Error) => { assert.equal(e.message, want); return true; });
  }
});

test('weight_map: a shard name that is empty, ".", a path or not a string, or weight_map not an object, is refused naming the index and the value', async () => {
  const s = sharded();
  const [name] = s.entries[1]!;
  for (const v of ['', '.', '..', 'sub/x.safetensors', '../x.safetensors']) {
    writeIndex(s.index, s.metadata, s.entries.map(([k, f]) => [k, k === name ? v : f]));
    await assert.rejects(loadModel(s.dir), (e: Error) => {
      assert.equal(e.message, `${s.index}: weight_map[${JSON.stringify(name)}] must be a file name in the same directory, got ${JSON.stringify(v)}`);
      return true;
    });
  }
  for (const [wm, got] of [['5', '5'], ['[]', '[]'], ['null', 'null'], ['"model.safetensors"', '"model.safetensors"']] as const) {
    fs.writeFileSync(s.index, `{"weight_map": ${wm}}`);
    await assert.rejects(loadModel(s.dir), (e: Error) => {
      assert.equal(e.message, `${s.index}: "weight_map" must be an object of tensor name -> shard file name, got ${got}`);
      return true;
    });
  }
  fs.writeFileSync(s.index, '{"metadata": {}}');
  await assert.rejects(loadModel(s.dir), (e: Error) => e.message === `${s.index}: missing "weight_map"`);
});

test('a shard that cannot be read says the index listed it: weight_map naming config.json, or a truncated shard', async () => {
  const s = sharded();
  const [name] = s.entries[1]!;
  writeIndex(s.index, s.metadata, s.entries.map(([k, f]) => [k, k === name ? 'config.json' : f]));
  await assert.rejects(loadModel(s.dir), (e: Error) => {
    assert.match(e.message, new RegExp(`^${path.join(s.dir, 'config.json')}: header length \\d+ runs past the end of the file .* \\(a shard listed in ${s.index}\\)$`));
    return true;
  });
  writeIndex(s.index, s.metadata, s.entries);
  const shard = path.join(s.dir, s.entries[0]![1]);
  fs.truncateSync(shard, 100);
  await assert.rejects(loadModel(s.dir), (e: Error) => e.message.startsWith(`${shard}: `) && e.message.endsWith(`(a shard listed in ${s.index})`));
});
