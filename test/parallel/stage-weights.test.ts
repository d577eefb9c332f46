// shareStageWeights over the in-process transport: every rank learns each stage's layers and the dtype its linear
// weights are held in (what rank 0's /v1/floe/info reports as engine.weights.stages), each in its own rank's slot.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { join } from 'node:path';
import { readHfConfig } from '../../src/formats/hf-config.js';
import type { LoadDType } from '../../src/formats/load.js';
import { localGroup } from '../../src/parallel/transport.js';
import { openStage } from '../../src/parallel/stage-model.js';
import { shareStageWeights } from '../../src/parallel/serve-stage.js';
import { balancedStages, formatStages } from '../../src/parallel/stages.js';
import { repoPath } from '../repo.js';

const MODEL = repoPath('models/floe-brown'); // f32
const HELD = { none: 'f32', bf16: 'bf16', fp8: 'fp8_e4m3' } as const;

for (const size of [2, 3]) {
  // each rank loads with its own --dtype here (a real job passes every rank the same), so a stage's dtype can only
  // come out right from its own slot
  const perRank = (['fp8', 'none', 'bf16'] as const).slice(0, size);
  test(`${size} in-process stages loaded as ${perRank.join(', ')}: every rank gets each stage's layers and linear dtype`, async () => {
    const group = localGroup(size);
    const opened = await Promise.all(group.map((tr) => openStage(MODEL, tr.rank, size, perRank[tr.rank] === 'none' ? {} : { load: { dtype: perRank[tr.rank] as LoadDType } })));
    const got = await Promise.all(group.map((tr) => shareStageWeights(tr, opened[tr.rank]!.model, opened[tr.rank]!.stages)));
    const layers = formatStages(balancedStages(readHfConfig(MODEL).config, size)).split(',');
    const want = perRank.map((d, rank) => ({ rank, layers: layers[rank]!, linear: HELD[d] }));
    for (const [rank, g] of got.entries()) assert.deepEqual(g, want, `rank ${rank}'s view`);
    for (const o of opened) o.loaded.dispose();
  });
}
