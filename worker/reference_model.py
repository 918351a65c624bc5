"""The reference implementation's stage: a contiguous slice of Hugging Face decoder layers with its own KV caches.

`LlamaStage` holds layers [first, last) of the model under LOCAL indices 0..n-1 (so a stage-local
cache is sized and indexed correctly), the embeddings on the first stage, and the final norm + LM
head on the last. A single-process model is simply the one stage that holds everything.

`SeqState` reproduces Hugging Face `generate`'s attention-mask and position bookkeeping, so a stage
fed the same left-padded batch computes bit-for-bit what `generate` computes. Every stage derives it
locally; no mask ever travels between ranks.

This module builds and runs modules only: it imports no torch.distributed and reads no files
(`checkpoint.py` loads weights, `generate.py` drives the stages).
"""

from __future__ import annotations

import copy
import inspect

import torch
from torch import nn
from transformers import LlamaConfig
from transformers.cache_utils import DynamicCache
from transformers.masking_utils import create_causal_mask
from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRMSNorm, LlamaRotaryEmbedding

from worker.partition import StagePlan

# transformers 5.24 renamed the cache keyword from `past_key_values` to `cache` (5.17 only knows the old name).
_LAYER_CACHE_KW = "cache" if "cache" in inspect.signature(LlamaDecoderLayer.forward).parameters else "past_key_values"
_MASK_CACHE_KW = "cache" if "cache" in inspect.signature(create_causal_mask).parameters else "past_key_values"
_MASK_EMBEDS_KW = "inputs_embeds" if "inputs_embeds" in inspect.signature(create_causal_mask).parameters else "input_embeds"


def prepare_config(config: LlamaConfig) -> LlamaConfig:
    """A copy with an explicit attention implementation.

    `_attn_implementation` is None until a PreTrainedModel is built, and then `create_causal_mask`
    silently returns no padding mask at all.
    """
    config = copy.deepcopy(config)
    config._attn_implementation = "sdpa"
    return config


class LlamaStage(nn.Module):
    """Layers [first, last) of a LLaMA model (+ embeddings on the first stage, norm + head on the last)."""

    def __init__(self, config: LlamaConfig, plan: StagePlan):
        super().__init__()
        self.config = prepare_config(config)
        self.plan = plan
        n_local = plan.last_layer - plan.first_layer
        # The stage's own view of the model: only its layers, so caches and masks size from local index 0.
        self.stage_config = copy.deepcopy(self.config)
        self.stage_config.num_hidden_layers = n_local
        if hasattr(self.stage_config, "layer_types") and self.stage_config.layer_types is not None:
            self.stage_config.layer_types = list(self.config.layer_types[plan.first_layer : plan.last_layer])
        self.embed_tokens = (
            nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id) if plan.is_first else None
        )
        self.layers = nn.ModuleList(LlamaDecoderLayer(self.config, layer_idx=i) for i in range(n_local))
        self.norm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps) if plan.is_last else None
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False) if plan.is_last else None
        # Rotary inv_freq is a non-persistent fp32 buffer (as from_pretrained keeps it); made fresh, on CPU,
        # and moved by `to()` — `LlamaRotaryEmbedding(device=...)` is gone in transformers 5.24.
        with torch.device("cpu"):
            self.rotary_emb = LlamaRotaryEmbedding(self.config)

    def checkpoint_names(self) -> dict[str, str]:
        """Local parameter name -> tensor name in a Hugging Face LLaMA checkpoint."""
        names = {}
        for local in self.state_dict(keep_vars=True):
            if local.startswith("rotary_emb."):
                continue
            if local.startswith("layers."):
                _, idx, rest = local.split(".", 2)
                names[local] = f"model.layers.{self.plan.first_layer + int(idx)}.{rest}"
            elif local.startswith(("embed_tokens.", "norm.")):
                names[local] = f"model.{local}"
            else:
                names[local] = local  # lm_head.weight
        return names

    def new_cache(self) -> DynamicCache:
        return DynamicCache(config=self.stage_config)

    def forward(self, x: torch.Tensor, seq: SeqState, cache: DynamicCache) -> torch.Tensor:
        """x: token ids [B, T] on the first stage, hidden states [B, T, H] otherwise.

        Returns hidden states [B, T, H], or on the last stage fp32 logits of the last position [B, V]
        (generate's `logits_to_keep=1`, cast as generate casts them).
        """
        hidden = self.embed_tokens(x) if self.embed_tokens is not None else x
        mask = create_causal_mask(
            config=self.stage_config,
            attention_mask=seq.attention_mask,
            position_ids=seq.position_ids,
            **{_MASK_EMBEDS_KW: hidden, _MASK_CACHE_KW: cache},
        )
        position_embeddings = self.rotary_emb(hidden, seq.position_ids)
        for layer in self.layers:
            hidden = layer(
                hidden,
                attention_mask=mask,
                position_ids=seq.position_ids,
                position_embeddings=position_embeddings,
                use_cache=True,
                **{_LAYER_CACHE_KW: cache},
            )
            if isinstance(hidden, tuple):  # older layers return (hidden,)
                hidden = hidden[0]
        if self.lm_head is None:
            return hidden
        return self.lm_head(self.norm(hidden[:, -1:, :]))[:, -1, :].float()


class SeqState:
    """Attention mask and position ids of one (micro-)batch, advanced exactly as HF generate does.

    `use_mask` is decided on the WHOLE padded batch (generate drops an all-ones mask for the whole
    run), so a micro-batch of unpadded rows cut from a padded batch still computes what the full batch does.
    """

    def __init__(self, prompt_mask: torch.Tensor, use_mask: bool):
        # prompt_mask: [B, T] of 0/1, left padded.
        mask = prompt_mask.long()
        self.attention_mask = mask if use_mask else None  # [B, T], one more column per step
        if use_mask:  # padding positions are 0; real tokens count from 0
            self.position_ids = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)  # [B, T]
        else:
            self.position_ids = torch.arange(mask.shape[1], device=mask.device).unsqueeze(0).expand_as(mask)

    def advance(self) -> None:
        """After a forward: next step feeds one token per row."""
        self.position_ids = self.position_ids[:, -1:] + 1
        if self.attention_mask is not None:
            ones = self.attention_mask.new_ones((self.attention_mask.shape[0], 1))
            self.attention_mask = torch.cat([self.attention_mask, ones], dim=-1)


def parameter_bytes(module: nn.Module) -> int:
    """Bytes of the parameters this module holds (on this rank: its stage or its tp shard)."""
    return sum(p.numel() * p.element_size() for p in module.parameters())
