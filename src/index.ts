// floe's library entry: models, formats, tokenizers and kernels for Llama-family inference.

export { openModel, type OpenedModel, type OpenOptions } from './model/open.js';
export { builtinModel, BUILTIN_MODELS, type BuiltinModelName } from './model/builtin.js';
export { generate, defaultKvDtype, type GenerateOptions, type GenerateResult, type TopLogprob, type TextSink } from './model/generate.js';
export {
  AdaptiveK, createProposer, DraftModelProposer, loadProposerModule, NgramIndex, NgramProposer, SuffixProposer, verifyDraft, DEFAULT_NUM_SPECULATIVE_TOKENS,
  type Proposal, type Proposer, type ProposeRequest, type ProposerFactory, type ProposerGeometry, type SpeculativeMethod, type SpeculativeModule,
  type SpeculativeSpec,
} from './model/speculation.js';
export { PredictionK, PredictionTracker, DEFAULT_NUM_PREDICTION_TOKENS, wordStartTable } from './model/prediction.js';
export { tokenBytes } from './engine/constrained/token-mask.js';
export { LlamaModel, type LlamaWeights, type LlamaLayer, type ForwardInput } from './model/llama.js';
export { KvCache } from './model/kv-cache.js';
export { Sampler, DEFAULT_SAMPLING, NonFiniteOutputError, type SamplingParams } from './model/sampler.js';
export { TextStream } from './model/text-stream.js';
export { type LlamaConfig, type RopeScaling, ropeInvFreq } from './model/config.js';
export { loadModel, type LoadedModel } from './formats/load.js';
export { parseGenerationDefaults, type GenerationDefaults } from './formats/hf-config.js';
export { Tokenizer, loadTokenizer } from './formats/tokenizer.js';
export { SpmTokenizer } from './formats/spm.js';
export { ChatTemplate, renderChat, encodeChat, loadChatTemplate, type ChatMessage } from './formats/chat-template.js';
export { readSafetensors, writeSafetensors, writeSafetensorsSharded } from './formats/safetensors.js';
export { readGguf } from './formats/gguf.js';
export { writeGguf, hfToGguf } from './formats/gguf-writer.js';
export { Tensor, type DType } from './tensor/tensor.js';
export { quantizeTensor } from './tensor/quantize.js';
export type { Backend, KvLayer, KvDType, AttentionBatch, AttentionShape } from './backend/backend.js';
export { referenceBackend } from './backend/reference.js';
export { loadNativeBackend, nativeCounters } from './backend/native.js';
export { selectBackend, type BackendName } from './backend/select.js';
export { startEngineChecked as startEngine, type EngineStartOptions } from './engine/client.js';
export type { EngineClient, EngineInfo, EngineStats, GenerateOutput, GenerateRequest, EmbedOutput, AdapterInfo, ConstraintSpec } from './engine/protocol.js';
export { EngineRequestError } from './engine/protocol.js';
export { startServer, type ServeOptions, type RunningServer } from './serve/server.js';
export { Guard, type GuardVerdict, type JudgeOptions, type GuardOpenOptions } from './platform/guard/guard.js';
export { buildGuardPrompt, type GuardFormat, type GuardRole, type GuardCategory } from './platform/guard/prompt.js';
export { GuardOutputError } from './platform/guard/verdict.js';
export { finetune, type FinetuneOptions } from './train/trainer.js';
export { RunSetupError } from './train/checkpoint.js';
export { OptionNamedError } from './train/option-names.js';
export { distill, type DistillOptions, type DistillSummary } from './train/distill.js';
export { writePeftAdapter } from './formats/peft.js';
export { readPeftAdapter, applyAdapter } from './model/adapter.js';
export { quantizeModelDir } from './formats/fp8-export.js';
export { evalPerplexity } from './train/eval.js';
export { Embedder, poolRows, l2Normalize, readEmbeddingConfig, EMBEDDING_CONFIG_FILE, type EmbedderOptions, type EmbeddingConfig, type Pooling } from './model/embed.js';
export {
  RagStore, Collection, CollectionNotFoundError, EmbedderMismatchError, SEARCH_MODES, VECTOR_INDEX_ROWS, VECTOR_PQ_ROWS,
  type CollectionInfo, type Passage, type SearchMode, type SearchOptions, type DocumentInput, type IngestOptions, type IngestResult, type IngestProgress,
} from './platform/rag/store.js';
export { ask, rerank, fitPassages, injectPassages, citations, type AnswerModel, type AskOptions, type RagAnswer, type Citation } from './platform/rag/answer.js';
export { openEmbedder, fromEmbedder, type RagEmbedder } from './platform/rag/embedder.js';
export { chunkText, type Chunk, type ChunkOptions } from './platform/rag/chunk.js';
export { extractDocument, SUPPORTED_EXTENSIONS, type ExtractedDoc } from './platform/rag/extract.js';
export { rrf } from './platform/rag/fusion.js';
export { synth, shippedPrompts, type SynthRunOptions, type SynthEngineOptions } from './platform/synth/synth.js';
export type { SynthSummary, SynthProgress } from './platform/synth/pipeline.js';
export type { SynthLlm, Gen, GenOptions } from './platform/synth/llm.js';
export type { MethodName, SeedTask, Doc } from './platform/synth/methods.js';
export type { GuardFilter } from './platform/synth/filters.js';
export { DocumentChunker, type Chunker, type Passage as SynthPassage } from './platform/synth/chunk.js';
export { wordSupport, contentWords, DEFAULT_GROUNDING, type GroundingOptions, type GroundingScore } from './platform/synth/grounding.js';
export { parseFilter, compileFilter, FilterError, FILTER_FIELDS, FILTER_OPS, type Filter, type FilterCondition } from './platform/rag/filter.js';
export { ChunkWorker } from './platform/rag/chunk-pool.js';
export { prepareDocuments, type PreparedDocument, type Preparer } from './platform/rag/prepare.js';
export { contrastiveObjective, loadPairs, infoNce, type ContrastiveOptions, type PooledObjective } from './train/contrastive.js';
