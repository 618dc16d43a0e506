"""Makes a tiny but real model repository: what a sentence-transformers BERT on the Hub holds.

Usage: python make_tiny.py OUT_DIR [--shards N] [--seed S]

Writes into OUT_DIR (created; must be empty or missing):
  config.json                       a BERT config transformers' AutoConfig accepts (model_type bert)
  generation_config.json            written by transformers' GenerationConfig
  tokenizer.json                    a WordPiece tokenizer built with the `tokenizers` package
  tokenizer_config.json, special_tokens_map.json, vocab.txt
  model-0000i-of-0000N.safetensors  N >= 2 shards of numpy float32 tensors (the `safetensors` package)
  model.safetensors.index.json      {"metadata": {"total_size": ...}, "weight_map": {tensor: shard}}
  modules.json, sentence_bert_config.json, config_sentence_transformers.json,
  1_Pooling/config.json             the sentence-transformers files (a nested folder)
  README.md

Everything is deterministic for a given seed (same bytes, same sha256). Prints a JSON summary:
{"dir": ..., "files": {path: {"size": n, "sha256": ...}}, "shards": [...]} on stdout. No torch, no
network.
"""

import argparse
import hashlib
import json
import os
import sys

import numpy as np
from safetensors.numpy import save_file
from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import WordPiece

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = [
    "the", "a", "model", "is", "tiny", "but", "real", "hello", "world", "file", "shard", "cache",
    "offline", "hub", "commit", "load", "token", "##s", "##ed", "##ing", "##er", "##ly",
]
HIDDEN, LAYERS, HEADS, INTERMEDIATE, POSITIONS = 32, 2, 2, 37, 64


def vocabulary():
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    digits = [str(d) for d in range(10)]
    punctuation = list(".,!?'-")
    pieces = ["##" + c for c in letters]
    vocab = SPECIAL + letters + digits + punctuation + WORDS + pieces
    seen = []
    for token in vocab:
        if token not in seen:
            seen.append(token)
    return seen


def write_json(path, value):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=2, sort_keys=True)
        f.write("\n")


def tokenizer(vocab):
    tok = Tokenizer(WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    cls, sep = vocab.index("[CLS]"), vocab.index("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    tok.decoder = decoders.WordPiece(prefix="##")
    return tok


def tensors(vocab_size, rng):
    """The weights of BertModel, by name, as transformers names them."""
    def t(*shape):
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    weights = {
        "embeddings.word_embeddings.weight": t(vocab_size, HIDDEN),
        "embeddings.position_embeddings.weight": t(POSITIONS, HIDDEN),
        "embeddings.token_type_embeddings.weight": t(2, HIDDEN),
        "embeddings.LayerNorm.weight": np.ones(HIDDEN, np.float32),
        "embeddings.LayerNorm.bias": np.zeros(HIDDEN, np.float32),
    }
    for layer in range(LAYERS):
        p = f"encoder.layer.{layer}."
        for name in ["attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"]:
            weights[p + name + ".weight"] = t(HIDDEN, HIDDEN)
            weights[p + name + ".bias"] = t(HIDDEN)
        weights[p + "attention.output.LayerNorm.weight"] = np.ones(HIDDEN, np.float32)
        weights[p + "attention.output.LayerNorm.bias"] = np.zeros(HIDDEN, np.float32)
        weights[p + "intermediate.dense.weight"] = t(INTERMEDIATE, HIDDEN)
        weights[p + "intermediate.dense.bias"] = t(INTERMEDIATE)
        weights[p + "output.dense.weight"] = t(HIDDEN, INTERMEDIATE)
        weights[p + "output.dense.bias"] = t(HIDDEN)
        weights[p + "output.LayerNorm.weight"] = np.ones(HIDDEN, np.float32)
        weights[p + "output.LayerNorm.bias"] = np.zeros(HIDDEN, np.float32)
    weights["pooler.dense.weight"] = t(HIDDEN, HIDDEN)
    weights["pooler.dense.bias"] = t(HIDDEN)
    return weights


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if args.shards < 2:
        parser.error("--shards must be at least 2")
    out = args.out
    os.makedirs(out, exist_ok=True)
    if os.listdir(out):
        parser.error(f"{out} is not empty")

    # Imported late: transformers is slow to import, and only writes the two configs.
    from transformers import BertConfig, GenerationConfig

    vocab = vocabulary()
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        intermediate_size=INTERMEDIATE,
        max_position_embeddings=POSITIONS,
        pad_token_id=vocab.index("[PAD]"),
        architectures=["BertModel"],
    )
    config.save_pretrained(out)
    GenerationConfig(pad_token_id=vocab.index("[PAD]"), max_length=POSITIONS).save_pretrained(out)

    tokenizer(vocab).save(os.path.join(out, "tokenizer.json"))
    with open(os.path.join(out, "vocab.txt"), "w", encoding="utf-8") as f:
        f.write("".join(token + "\n" for token in vocab))
    specials = {
        "cls_token": "[CLS]",
        "mask_token": "[MASK]",
        "pad_token": "[PAD]",
        "sep_token": "[SEP]",
        "unk_token": "[UNK]",
    }
    write_json(os.path.join(out, "special_tokens_map.json"), specials)
    write_json(
        os.path.join(out, "tokenizer_config.json"),
        {
            "tokenizer_class": "BertTokenizer",
            "do_lower_case": True,
            "model_max_length": POSITIONS,
            "clean_up_tokenization_spaces": False,
            **specials,
        },
    )

    weights = tensors(len(vocab), np.random.default_rng(args.seed))
    names = list(weights)
    per_shard = -(-len(names) // args.shards)
    weight_map, shards = {}, []
    for i in range(args.shards):
        shard = f"model-{i + 1:05d}-of-{args.shards:05d}.safetensors"
        part = {name: weights[name] for name in names[i * per_shard : (i + 1) * per_shard]}
        if not part:
            parser.error(f"too many shards for {len(names)} tensors")
        save_file(part, os.path.join(out, shard), metadata={"format": "pt"})
        weight_map.update({name: shard for name in part})
        shards.append(shard)
    total = sum(int(w.nbytes) for w in weights.values())
    write_json(
        os.path.join(out, "model.safetensors.index.json"),
        {"metadata": {"total_size": total}, "weight_map": weight_map},
    )

    write_json(
        os.path.join(out, "modules.json"),
        [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        ],
    )
    write_json(os.path.join(out, "sentence_bert_config.json"), {"max_seq_length": POSITIONS, "do_lower_case": True})
    write_json(
        os.path.join(out, "config_sentence_transformers.json"),
        {"__version__": {"sentence_transformers": "5.0.0"}, "prompts": {}, "similarity_fn_name": "cosine"},
    )
    write_json(
        os.path.join(out, "1_Pooling", "config.json"),
        {
            "word_embedding_dimension": HIDDEN,
            "pooling_mode_cls_token": False,
            "pooling_mode_mean_tokens": True,
            "pooling_mode_max_tokens": False,
            "pooling_mode_mean_sqrt_len_tokens": False,
        },
    )
    with open(os.path.join(out, "README.md"), "w", encoding="utf-8") as f:
        f.write("---\nlibrary_name: sentence-transformers\nlicense: mit\n---\n# tiny-bert\n\nA test model.\n")

    files = {}
    for root, _, names_in in os.walk(out):
        for name in names_in:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                data = f.read()
            rel = os.path.relpath(path, out).replace(os.sep, "/")
            files[rel] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    json.dump({"dir": out, "files": dict(sorted(files.items())), "shards": shards}, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
