// llama_bench: prefill + greedy decode timings of a GGUF model through the prebuilt llama.cpp library, as one JSON line.
//
// usage: llama_bench --model F --backends DIR --prompt-file F [--threads N] [--decode N] [--n-seq S]
//                    [--logits-out F] [--warmup 0|1] [--distinct-prompts]
// The prompt file holds whitespace-separated token ids. With S > 1 the prompt is prefilled once, copied to S
// sequences, and each decode step feeds one token per sequence (S tokens per llama_decode).
// --distinct-prompts (serving benchmark): sequence s is prefilled with its own prompt, the file's ids rotated by
// s * n_prompt / S, so no two streams share a prefix; each stream then decodes greedily from its own logits.

#include "llama.h"
#include "ggml-backend.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

static double now_ms() {
    using namespace std::chrono;
    return duration<double, std::milli>(steady_clock::now().time_since_epoch()).count();
}

static void die(const std::string & msg) {
    fprintf(stderr, "llama_bench: %s\n", msg.c_str());
    exit(1);
}

static int argmax(const float * x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++) if (x[i] > x[best]) best = i;
    return best;
}

static void quiet_log(ggml_log_level level, const char * text, void *) {
    if (level >= GGML_LOG_LEVEL_ERROR) fputs(text, stderr);
}

// Feeds tokens[i] at pos0 + i for sequence seq, in chunks of n_batch; logits only for the last token.
static void prefill(llama_context * ctx, llama_batch & batch, const std::vector<llama_token> & tokens, int seq, int n_batch) {
    for (size_t s = 0; s < tokens.size(); s += n_batch) {
        size_t n = std::min(tokens.size() - s, (size_t) n_batch);
        batch.n_tokens = (int) n;
        for (size_t i = 0; i < n; i++) {
            batch.token[i] = tokens[s + i];
            batch.pos[i] = (llama_pos) (s + i);
            batch.n_seq_id[i] = 1;
            batch.seq_id[i][0] = seq;
            batch.logits[i] = (s + i == tokens.size() - 1);
        }
        if (llama_decode(ctx, batch) != 0) die("llama_decode failed during prefill");
    }
}

int main(int argc, char ** argv) {
    std::string model_path, backends_dir, prompt_file, logits_out;
    int threads = 1, n_decode = 128, n_seq = 1, warmup = 1;
    bool distinct = false;
    for (int i = 1; i < argc; i++) {
        std::string a = argv[i];
        auto next = [&]() -> std::string {
            if (i + 1 >= argc) die("missing value after " + a);
            return argv[++i];
        };
        if (a == "--model") model_path = next();
        else if (a == "--backends") backends_dir = next();
        else if (a == "--prompt-file") prompt_file = next();
        else if (a == "--threads") threads = atoi(next().c_str());
        else if (a == "--decode") n_decode = atoi(next().c_str());
        else if (a == "--n-seq") n_seq = atoi(next().c_str());
        else if (a == "--logits-out") logits_out = next();
        else if (a == "--warmup") warmup = atoi(next().c_str());
        else if (a == "--distinct-prompts") distinct = true;
        else die("unknown argument " + a);
    }
    if (model_path.empty() || backends_dir.empty() || prompt_file.empty()) die("--model, --backends and --prompt-file are required");
    if (threads < 1 || n_seq < 1 || n_decode < 0) die("threads and n-seq must be >= 1, decode >= 0");

    std::vector<llama_token> prompt;
    {
        std::ifstream f(prompt_file);
        if (!f) die("cannot open prompt file " + prompt_file);
        long v;
        while (f >> v) prompt.push_back((llama_token) v);
    }
    if (prompt.empty()) die("prompt file " + prompt_file + " has no token ids");

    llama_log_set(quiet_log, nullptr);
    ggml_backend_load_all_from_path(backends_dir.c_str());
    llama_backend_init();

    double t0 = now_ms();
    llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    mp.progress_callback = [](float, void *) { return true; };
    llama_model * model = llama_model_load_from_file(model_path.c_str(), mp);
    if (!model) die("cannot load model " + model_path);
    const int n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));

    const int n_prompt = (int) prompt.size();
    for (llama_token t : prompt) if (t < 0 || t >= n_vocab) die("prompt token " + std::to_string(t) + " outside the vocabulary");
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = (uint32_t) ((n_prompt + n_decode + 16) * n_seq + 256);
    cp.n_batch = (uint32_t) std::max(n_prompt, n_seq);
    cp.n_ubatch = cp.n_batch;
    cp.n_seq_max = (uint32_t) n_seq;
    cp.n_threads = threads;
    cp.n_threads_batch = threads;
    cp.no_perf = true;
    llama_context * ctx = llama_init_from_model(model, cp);
    if (!ctx) die("cannot create a context");
    const double load_ms = now_ms() - t0;
    llama_memory_t mem = llama_get_memory(ctx);
    llama_batch batch = llama_batch_init((int32_t) std::max(n_prompt, n_seq), 0, 1);

    if (warmup) {
        // touch every weight once (mmap page-in, thread pool start) outside the timed region
        std::vector<llama_token> w(prompt.begin(), prompt.begin() + std::min(n_prompt, 16));
        prefill(ctx, batch, w, 0, (int) cp.n_batch);
        llama_memory_clear(mem, true);
    }

    double p0 = now_ms();
    prefill(ctx, batch, prompt, 0, (int) cp.n_batch);
    const double prefill_ms = now_ms() - p0;
    double distinct_prefill_ms = 0;

    const float * logits0 = llama_get_logits_ith(ctx, -1);
    if (!logits_out.empty()) {
        FILE * f = fopen(logits_out.c_str(), "wb");
        if (!f) die("cannot write " + logits_out);
        fwrite(logits0, sizeof(float), n_vocab, f);
        fclose(f);
    }
    std::vector<llama_token> cur(n_seq, argmax(logits0, n_vocab));
    if (distinct) {
        double q0 = now_ms();
        for (int s = 1; s < n_seq; s++) {
            std::vector<llama_token> rot(n_prompt);
            const int shift = (int) ((long) s * n_prompt / n_seq);
            for (int i = 0; i < n_prompt; i++) rot[i] = prompt[(i + shift) % n_prompt];
            prefill(ctx, batch, rot, s, (int) cp.n_batch);
            cur[s] = argmax(llama_get_logits_ith(ctx, -1), n_vocab);
        }
        distinct_prefill_ms = now_ms() - q0;
    } else {
        for (int s = 1; s < n_seq; s++) llama_memory_seq_cp(mem, 0, s, -1, -1);
    }

    std::vector<llama_token> out0;
    out0.push_back(cur[0]);
    double d0 = now_ms();
    for (int step = 0; step < n_decode; step++) {
        batch.n_tokens = n_seq;
        for (int s = 0; s < n_seq; s++) {
            batch.token[s] = cur[s];
            batch.pos[s] = n_prompt + step;
            batch.n_seq_id[s] = 1;
            batch.seq_id[s][0] = s;
            batch.logits[s] = 1;
        }
        if (llama_decode(ctx, batch) != 0) die("llama_decode failed at decode step " + std::to_string(step));
        for (int s = 0; s < n_seq; s++) cur[s] = argmax(llama_get_logits_ith(ctx, s), n_vocab);
        out0.push_back(cur[0]);
    }
    const double decode_ms = now_ms() - d0;

    printf("{\"engine\":\"llama.cpp-harness\",\"threads\":%d,\"n_seq\":%d,\"prompt_tokens\":%d,\"decode_steps\":%d,"
           "\"load_ms\":%.3f,\"prefill_ms\":%.3f,\"decode_ms\":%.3f,\"prefill_tps\":%.3f,\"decode_tps\":%.3f,\"tokens\":[",
           threads, n_seq, n_prompt, n_decode, load_ms, prefill_ms, decode_ms,
           n_prompt / (prefill_ms / 1000.0), n_decode > 0 ? n_decode * n_seq / (decode_ms / 1000.0) : 0.0);
    for (size_t i = 0; i < out0.size() && i < 16; i++) printf("%s%d", i ? "," : "", out0[i]);
    printf("],\"distinct_prompts\":%s,\"distinct_prefill_ms\":%.3f,\"kv_unified\":%s,\"system_info\":\"%s\"}\n",
           distinct ? "true" : "false", distinct_prefill_ms, cp.kv_unified ? "true" : "false", llama_print_system_info());

    llama_batch_free(batch);
    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();
    return 0;
}
