"""Tokenizers that need no download, and the left-padded batches every mode feeds its model.

A synthetic model gets a byte-level BPE trained in-process on a fixed text (deterministic, ~0.1 s),
saved beside the checkpoint by `make-checkpoint`. A model directory that ships its own tokenizer
(e.g. OpenLLaMA's) is used as is. Prompts are encoded as `<s>` + text with no other special tokens,
and batches are padded on the left, exactly as the reference `generate` sees them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from worker.contract import ModelConfig

# Fixed training text: the shipped prompts' kind of English plus code and digits, so common words merge.
_TRAINING_TEXT = [
    "The quick brown fox jumps over the lazy dog while the cat sleeps in the warm afternoon sun.",
    "Distributed inference splits a large language model across several GPUs on one or more nodes.",
    "Pipeline parallelism gives each stage a slice of the layers; tensor parallelism splits each layer.",
    "In 1969 the first humans walked on the Moon, and 12 people have done so since then.",
    "def fibonacci(n):\n    return n if n < 2 else fibonacci(n - 1) + fibonacci(n - 2)\n",
    "Once upon a time, in a small village by the sea, there lived an old fisherman and his daughter.",
    "Explain why the sky is blue, how rainbows form, and what makes sunsets red and orange.",
    "Slurm schedules jobs on clusters: sbatch submits, squeue lists, and scancel stops a job.",
    "Water boils at 100 degrees Celsius at sea level; at higher altitudes it boils at lower temperatures.",
    "A recipe for bread: flour, water, salt and yeast, kneaded, left to rise, then baked for forty minutes.",
]
SPECIAL_TOKENS = ["<pad>", "<s>", "</s>"]  # ids 0, 1, 2 = the configs' pad/bos/eos


def train_tokenizer(cfg: ModelConfig):
    """A byte-level BPE (at most the model's vocab) wrapped as a fast HF tokenizer, padding on the left."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=min(cfg.vocab_size, 2048),
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_TRAINING_TEXT, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe, pad_token="<pad>", bos_token="<s>", eos_token="</s>", padding_side="left"
    )


def load_tokenizer(model_dir: str | os.PathLike | None, cfg: ModelConfig | None = None):
    """The model directory's tokenizer when it has one, else a freshly trained one for `cfg`."""
    if model_dir is not None and any(
        (Path(model_dir) / f).is_file() for f in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")
    ):
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
        tok.padding_side = "left"
        if tok.pad_token_id is None:
            tok.pad_token = tok.unk_token or tok.eos_token
        return tok
    if cfg is None:
        raise ValueError(f"{model_dir} has no tokenizer and no model config was given to train one")
    return train_tokenizer(cfg)


def encode_prompt(tokenizer, text: str) -> list[int]:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return [tokenizer.bos_token_id, *ids]


def decode(tokenizer, ids: list[int]) -> str:
    """Text of generated ids; ids a small synthetic tokenizer does not know are dropped, not fatal."""
    vocab = len(tokenizer)
    return tokenizer.decode([i for i in ids if 0 <= i < vocab], skip_special_tokens=True)


@dataclass
class PaddedBatch:
    """Left-padded prompt ids of one batch and which requests they are."""

    indices: list[int]  # request index of each row
    input_ids: torch.Tensor  # [B, T] int64
    attention_mask: torch.Tensor  # [B, T] int64, 0 on the left padding
    prompt_lengths: list[int]

    @property
    def padded(self) -> bool:
        return bool((self.attention_mask == 0).any())

    def to(self, device: torch.device) -> PaddedBatch:
        return PaddedBatch(self.indices, self.input_ids.to(device), self.attention_mask.to(device), self.prompt_lengths)

    def rows(self, start: int, stop: int) -> PaddedBatch:
        """A row slice, keeping the whole batch's padded length (re-padding would change results)."""
        return PaddedBatch(
            self.indices[start:stop],
            self.input_ids[start:stop],
            self.attention_mask[start:stop],
            self.prompt_lengths[start:stop],
        )


def pad_batch(indices: list[int], prompts_ids: list[list[int]], pad_id: int, width: int | None = None) -> PaddedBatch:
    """Left-padded to the longest prompt, or to `width` when given (never narrower than the longest)."""
    width = max([len(p) for p in prompts_ids] + [width or 0])
    ids = torch.full((len(prompts_ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts_ids), width), dtype=torch.long)
    for row, p in enumerate(prompts_ids):
        ids[row, width - len(p) :] = torch.tensor(p, dtype=torch.long)
        mask[row, width - len(p) :] = 1
    return PaddedBatch(list(indices), ids, mask, [len(p) for p in prompts_ids])


def make_batches(
    request_ids: list[list[int]], batch_size: int, pad_id: int, first_index: int = 0, width: int | None = None
) -> list[PaddedBatch]:
    """Consecutive requests in batches of `batch_size` (the last may be smaller), each padded on its own
    (or all to `width`)."""
    batches = []
    for start in range(0, len(request_ids), batch_size):
        chunk = request_ids[start : start + batch_size]
        indices = list(range(first_index + start, first_index + start + len(chunk)))
        batches.append(pad_batch(indices, chunk, pad_id, width))
    return batches


def micro_batch_bounds(batch_rows: int, micro_batches: int) -> list[tuple[int, int]]:
    """Row ranges of the micro-batches (as even as possible; never empty)."""
    m = min(micro_batches, batch_rows)
    base, extra = divmod(batch_rows, m)
    bounds, start = [], 0
    for i in range(m):
        n = base + (1 if i < extra else 0)
        bounds.append((start, start + n))
        start += n
    return bounds
