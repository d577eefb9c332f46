#!/usr/bin/env python3
# Trains the SentencePiece fixture (test/fixtures/spm/): a Llama-style BPE model on the Brown corpus, its vocabulary
# as JSON (for the GGUF that scripts/make_spm_fixture.ts writes), and the sentencepiece library's ids for strings.json.
#
# Run by hand (Debian python3-sentencepiece 0.1.97), after `node --import tsx scripts/make-default-model.ts corpora`:
#   /usr/bin/python3 scripts/make_spm_fixture.py
# then `node --import tsx scripts/make_spm_fixture.ts` (node-llama-cpp ids).
import json
import os
import random
import sys

import sentencepiece as spm

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.path.join(ROOT, "test", "fixtures", "spm")
BROWN = os.path.join(ROOT, "data", "brown", "train.jsonl")
USER_DEFINED = ["<|user|>"]
# A few non-Latin and indented lines so that multi-byte characters and space runs become pieces; anything else unseen falls back to bytes.
EXTRA = [
    "café naïve résumé déjà vu à la carte",
    "Привет, мир! Как дела? Мир и дружба.",
    "日本語のテキストです。東京は大きい。",
    "    def f(x):  # indented code, runs of spaces",
    "        return  x  +  1",
]


def brown_heldout(n: int) -> list[str]:
    """The first n held-out Brown records, cut to 400 characters (text the model never trained on)."""
    out = []
    with open(os.path.join(ROOT, "data", "brown", "heldout.jsonl"), encoding="utf-8") as f:
        for rec in f:
            if rec.strip() and len(out) < n:
                out.append(json.loads(rec)["text"][:400])
    return out


# Fragments that stress the merge order, byte fallback and special-token splitting.
POOL = [" ", "  ", "   ", "\n", "\t", "\r\n", "a", "e", "th", "the", "The", "ing", "re", "1", "42", "007", ".", ",", "'", '"',
        "-", "(", ")", "é", "ï", "П", "мир", "日", "本", "😀", "🏽", "∮", "𝔘", "ꙮ", "\u00a0", "\u200b", "▁", "<s>", "</s>",
        "<unk>", "<|user|>", "<0x41>", "<", ">", "|", "Hello", "world", "jury", "said", "x"]


def random_strings(n: int) -> list[str]:
    r = random.Random(1)
    return ["".join(r.choice(POOL) for _ in range(r.randint(1, 24))) for _ in range(n)]


def main() -> None:
    if not os.path.exists(BROWN):
        sys.exit(f"{BROWN} is missing: run `node --import tsx scripts/make-default-model.ts corpora` first")
    lines: list[str] = []
    with open(BROWN, encoding="utf-8") as f:
        for rec in f:
            if rec.strip():
                lines.extend(l for l in json.loads(rec)["text"].split("\n") if l.strip())
    random.Random(0).shuffle(lines)
    lines = lines[:30000] + EXTRA * 50
    os.makedirs(OUT, exist_ok=True)
    prefix = os.path.join(OUT, "tokenizer")
    # Llama 2's trainer settings, smaller: BPE, byte fallback, split digits, identity normalisation, spaces kept.
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_prefix=prefix, model_type="bpe", vocab_size=3000,
        byte_fallback=True, split_digits=True, allow_whitespace_only_pieces=True, character_coverage=1.0,
        normalization_rule_name="identity", remove_extra_whitespaces=False, add_dummy_prefix=True,
        user_defined_symbols=USER_DEFINED, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        num_threads=1, seed_sentencepiece_size=200000, minloglevel=1,
    )
    os.remove(prefix + ".vocab")
    sp = spm.SentencePieceProcessor(model_file=prefix + ".model")

    # GGUF token_type numbering (llama.cpp) is sentencepiece's ModelProto.SentencePiece.Type.
    vocab = []
    for i in range(sp.get_piece_size()):
        piece = sp.id_to_piece(i)
        t = 1
        if sp.is_unknown(i): t = 2
        elif sp.is_control(i): t = 3
        elif piece in USER_DEFINED: t = 4
        elif sp.is_unused(i): t = 5
        elif sp.is_byte(i): t = 6
        vocab.append({"piece": piece, "score": sp.get_score(i), "type": t})

    strings = json.load(open(os.path.join(OUT, "strings.json"), encoding="utf-8")) + brown_heldout(120) + random_strings(80)
    ids = [sp.encode(s) for s in strings]
    out = {
        "provenance": f"sentencepiece {spm.__version__} (Debian python3-sentencepiece), scripts/make_spm_fixture.py",
        "bos_id": sp.bos_id(), "eos_id": sp.eos_id(), "unk_id": sp.unk_id(),
        "vocab": vocab,
        # encode(text) without BOS (sentencepiece never parses control tokens); decode(ids) of those ids
        "cases": [{"text": s, "ids": i, "decoded": sp.decode(i)} for s, i in zip(strings, ids)],
    }
    with open(os.path.join(OUT, "sentencepiece.json"), "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=0)
    print(f"{prefix}.model: {sp.get_piece_size()} pieces; {len(strings)} strings encoded")

    # A second, small model with sentencepiece's default whitespace handling (remove_extra_whitespaces on).
    rws = os.path.join(OUT, "tokenizer-rws")
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_prefix=rws, model_type="bpe", vocab_size=400, byte_fallback=True,
        character_coverage=1.0, normalization_rule_name="identity", remove_extra_whitespaces=True,
        num_threads=1, minloglevel=1,
    )
    os.remove(rws + ".vocab")
    sp2 = spm.SentencePieceProcessor(model_file=rws + ".model")
    hand = json.load(open(os.path.join(OUT, "strings.json"), encoding="utf-8"))
    with open(rws + ".json", "w", encoding="utf-8") as f:
        json.dump({"cases": [{"text": t, "ids": sp2.encode(t), "decoded": sp2.decode(sp2.encode(t))} for t in hand]}, f, ensure_ascii=False)
    print(f"{rws}.model: {sp2.get_piece_size()} pieces")


if __name__ == "__main__":
    main()
