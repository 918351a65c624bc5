"""The fast LLaMA: a compact stage with fused weights and a static KV cache, after gpt-fast's model.py.

A `FastStage` holds layers [first, last) of the model (+ the embeddings on the first stage, the final
norm + LM head on the last), optionally one tensor-parallel shard of them. Its weights are fused at
load: `wqkv` = [q; k; v] rows and `w13` = [gate; up] rows, taken from Hugging Face checkpoint names
(`load_fast_stage`), so the same files serve both implementations.

Every op follows Hugging Face's LLaMA in its order and dtypes (RMSNorm in fp32 then cast, rotary
tables computed in fp32 then cast, SDPA with a boolean mask, logits of the last position cast to
fp32), so on CPU in fp32 it picks the same greedy ids as `LlamaForCausalLM.generate` and as the
reference stage (`worker/reference_model.py`, which stays the reference implementation); the tests demand it.

The KV cache is preallocated per (batch, length bucket) and written in place at device-side slot
indices; which slots a row may attend to lives in a device mask (`valid`), so left padding is per row
and nothing in a decode step depends on a host value. That is what lets `worker/engine.py` capture a
step as one CUDA graph.

This module builds and runs modules only: no torch.distributed (tensor parallel passes its
all-reduce in as `reduce`), no files (`load_fast_stage` reads through a tensor source).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from worker import quant
from worker.partition import StagePlan


@dataclass(frozen=True)
class Shape:
    """The dimensions a fast stage needs, from an HF `LlamaConfig`; heads are per tensor-parallel rank."""

    hidden: int
    intermediate: int  # per tp rank
    heads: int  # per tp rank
    kv_heads: int  # per tp rank
    head_dim: int
    vocab: int
    eps: float
    rope_theta: float
    max_positions: int

    @classmethod
    def of(cls, config, tp_size: int = 1) -> Shape:
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        kv = config.num_key_value_heads or config.num_attention_heads
        if config.num_attention_heads % tp_size or kv % tp_size or config.intermediate_size % tp_size:
            raise ValueError(
                f"tensor parallel over {tp_size} ranks needs the heads ({config.num_attention_heads}), "
                f"key/value heads ({kv}) and intermediate size ({config.intermediate_size}) divisible by {tp_size}"
            )
        theta = getattr(config, "rope_theta", None)
        if theta is None:  # transformers >= 5 keeps it in rope_parameters
            theta = (getattr(config, "rope_parameters", None) or {}).get("rope_theta", 10000.0)
        return cls(
            hidden=config.hidden_size,
            intermediate=config.intermediate_size // tp_size,
            heads=config.num_attention_heads // tp_size,
            kv_heads=kv // tp_size,
            head_dim=head_dim,
            vocab=config.vocab_size,
            eps=config.rms_norm_eps,
            rope_theta=float(theta),
            max_positions=config.max_position_embeddings,
        )


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """HF LlamaRMSNorm, op for op: normalise in fp32, cast back, then scale."""
    dtype = x.dtype
    h = x.to(torch.float32)
    variance = h.pow(2).mean(-1, keepdim=True)
    h = h * torch.rsqrt(variance + eps)
    return weight * h.to(dtype)


def rotary_tables(shape: Shape, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin [max_positions, head_dim] in fp32, computed as HF's default rotary embedding does."""
    dim = shape.head_dim
    inv_freq = 1.0 / (shape.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.int64).to(torch.float) / dim))
    positions = torch.arange(shape.max_positions, dtype=torch.float)
    freqs = positions[:, None] * inv_freq[None, :]  # one fp32 product each, as HF's outer-product matmul
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(device), emb.sin().to(device)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2 :]
    return torch.cat((-x2, x1), dim=-1)


def attention_mask(valid: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
    """Which cache slots each new token attends to: [B, 1, T, L] bool.

    valid: [B, L] slots holding a real token of the row; slots: [T] where the T new tokens are written.
    A token sees valid slots up to its own (causal) and always itself, so a left-padding position
    (which no real token ever sees) still has one finite score instead of a row of -inf and a NaN.
    """
    cols = torch.arange(valid.shape[1], device=valid.device)  # [L]
    causal = cols[None, :] <= slots[:, None]  # [T, L]
    own = cols[None, :] == slots[:, None]
    return ((valid[:, None, :] & causal[None]) | own[None])[:, None]


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, groups: int) -> torch.Tensor:
    """Attention of q [B, H, T, D] over the cache k, v [B, KV, L, D] where `mask` [B, 1, T, L] allows.

    Prompts go through SDPA with a boolean mask, as HF's LLaMA does. A decode step (T = 1) is written
    out: with a mask and OpenLLaMA's head size of 100 no fused SDPA kernel applies, and SDPA's math
    fallback upcasts and rescales the whole cache, reading it three times per layer; here the cache is
    read once by each matmul and only the [B, H, 1, L] scores are scaled, masked and softmaxed (fp32).
    """
    d = q.shape[-1]
    if q.shape[2] != 1:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.0, scale=d**-0.5,
                                              enable_gqa=groups != 1)
    if groups != 1:
        k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    scores = torch.matmul(q, k.transpose(-1, -2)).float() * d**-0.5  # [B, H, 1, L]
    probs = scores.masked_fill(~mask, float("-inf")).softmax(dim=-1).to(q.dtype)
    return torch.matmul(probs, v)


class Block(nn.Module):
    """One decoder layer's weights (fused); `forward` is HF LlamaDecoderLayer's arithmetic."""

    def __init__(self, shape: Shape):
        super().__init__()
        e, d = shape.hidden, shape.head_dim
        self.shape = shape
        self.attn_norm = nn.Parameter(torch.empty(e), requires_grad=False)
        self.wqkv = nn.Parameter(torch.empty((shape.heads + 2 * shape.kv_heads) * d, e), requires_grad=False)
        self.wo = nn.Parameter(torch.empty(e, shape.heads * d), requires_grad=False)
        self.mlp_norm = nn.Parameter(torch.empty(e), requires_grad=False)
        self.w13 = nn.Parameter(torch.empty(2 * shape.intermediate, e), requires_grad=False)
        self.w2 = nn.Parameter(torch.empty(e, shape.intermediate), requires_grad=False)


def block_forward(
    x: torch.Tensor,
    attn_norm: torch.Tensor,
    wqkv: torch.Tensor,
    wo: torch.Tensor,
    mlp_norm: torch.Tensor,
    w13: torch.Tensor,
    w2: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    mask: torch.Tensor,
    slots: torch.Tensor,
    eps: float,
    heads: int,
    kv_heads: int,
    reduce: Callable[[torch.Tensor], torch.Tensor],
    linear: Callable = quant.matmul,
) -> torch.Tensor:
    """One layer: x [B, T, E] -> [B, T, E]; writes this step's keys and values into the caches.

    A free function of tensors (weights included) so one compiled graph serves every layer.
    k_cache, v_cache: [B, KV, L, D]; cos, sin: [B, T, D] in x's dtype; mask: [B, 1, T, L]; slots: [T].
    `reduce` sums a tensor-parallel partial result over the ranks (identity on one rank); `linear`
    is how the four weight matmuls run (`quant.matmul`, or `quant.gemv` for one row under the
    compiler); the weights are tensors or quantized weights (`worker/quant.py`).
    """
    b, t, _ = x.shape
    d = k_cache.shape[-1]
    h = rms_norm(x, attn_norm, eps)
    qkv = linear(h, wqkv)  # [B, T, (H + 2 KV) D]
    q, k, v = qkv.split([heads * d, kv_heads * d, kv_heads * d], dim=-1)
    q = q.view(b, t, heads, d).transpose(1, 2)  # [B, H, T, D]
    k = k.view(b, t, kv_heads, d).transpose(1, 2)  # [B, KV, T, D]
    v = v.view(b, t, kv_heads, d).transpose(1, 2)
    c, s = cos.unsqueeze(1), sin.unsqueeze(1)  # [B, 1, T, D]
    q = (q * c) + (_rotate_half(q) * s)
    k = (k * c) + (_rotate_half(k) * s)
    # Indexed assignment (as gpt-fast writes its cache): the compiler updates the cache in place.
    k_cache[:, :, slots] = k
    v_cache[:, :, slots] = v
    attn = attend(q, k_cache, v_cache, mask, heads // kv_heads)  # [B, H, T, D]
    attn = attn.transpose(1, 2).reshape(b, t, heads * d)
    x = x + reduce(linear(attn, wo))
    h = rms_norm(x, mlp_norm, eps)
    gate, up = linear(h, w13).chunk(2, dim=-1)  # [B, T, I] each
    return x + reduce(linear(F.silu(gate) * up, w2))


def no_reduce(t: torch.Tensor) -> torch.Tensor:
    return t


class FastStage(nn.Module):
    """Layers [first, last) with fused weights (+ embeddings first, norm + head last), one tp shard of them."""

    def __init__(self, shape: Shape, plan: StagePlan, tp_rank: int = 0, tp_size: int = 1):
        super().__init__()
        self.shape, self.plan, self.tp_rank, self.tp_size = shape, plan, tp_rank, tp_size
        e, v = shape.hidden, shape.vocab
        self.embed = nn.Parameter(torch.empty(v, e), requires_grad=False) if plan.is_first else None
        self.layers = nn.ModuleList(Block(shape) for _ in range(plan.last_layer - plan.first_layer))
        self.norm = nn.Parameter(torch.empty(e), requires_grad=False) if plan.is_last else None
        self.head = nn.Parameter(torch.empty(v, e), requires_grad=False) if plan.is_last else None
        self.reduce: Callable[[torch.Tensor], torch.Tensor] = no_reduce
        self.cos: torch.Tensor | None = None  # rotary tables, made on the stage's device at load
        self.sin: torch.Tensor | None = None
        self.scheme = "none"  # weight quantization of the matmuls (worker/quant.py), set at load

    @property
    def dtype(self) -> torch.dtype:  # of activations and the cache (matmul weights may be quantized)
        return self.layers[0].attn_norm.dtype

    @property
    def device(self) -> torch.device:
        return self.layers[0].attn_norm.device

    def new_cache(self, batch: int, length: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per layer (keys, values) [B, KV, L, D], zeroed once (stale slots are masked, never read)."""
        s = self.shape
        return [
            (
                torch.zeros(batch, s.kv_heads, length, s.head_dim, dtype=self.dtype, device=self.device),
                torch.zeros(batch, s.kv_heads, length, s.head_dim, dtype=self.dtype, device=self.device),
            )
            for _ in self.layers
        ]

    def forward(
        self,
        x: torch.Tensor,
        positions: torch.Tensor,
        slots: torch.Tensor,
        valid: torch.Tensor,
        cache: list[tuple[torch.Tensor, torch.Tensor]],
        layer_fn: Callable = block_forward,
    ) -> torch.Tensor:
        """x: token ids [B, T] on the first stage, hidden [B, T, E] otherwise.

        positions: [B, T] rotary positions; slots: [T] cache slots of the new tokens; valid: [B, L].
        `layer_fn` runs each layer: `block_forward`, or the engine's compiled version of it.
        Returns hidden [B, T, E], or on the last stage fp32 logits of the last position [B, V].
        """
        hidden = self.hidden_states(x, positions, slots, valid, cache, layer_fn)
        if self.head is None:
            return hidden
        return quant.matmul(rms_norm(hidden[:, -1:, :], self.norm, self.shape.eps), self.head)[:, -1, :].float()

    def hidden_states(self, x, positions, slots, valid, cache, layer_fn: Callable = block_forward) -> torch.Tensor:
        """The layers' output [B, T, E] (before the final norm), arguments as `forward`'s."""
        hidden = F.embedding(x, self.embed) if self.embed is not None else x
        cos = self.cos[positions].to(hidden.dtype)  # [B, T, D]
        sin = self.sin[positions].to(hidden.dtype)
        mask = attention_mask(valid, slots)
        s = self.shape
        for block, (k_cache, v_cache) in zip(self.layers, cache):
            hidden = layer_fn(
                hidden, block.attn_norm, block.wqkv, block.wo, block.mlp_norm, block.w13, block.w2,
                k_cache, v_cache, cos, sin, mask, slots, s.eps, s.heads, s.kv_heads, self.reduce,
            )
        return hidden

    def all_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """fp32 logits of every position [B, T, V] from the last stage's hidden [B, T, E] (teacher forcing)."""
        return quant.matmul(rms_norm(hidden, self.norm, self.shape.eps), self.head).float()


# --- loading from checkpoint names ------------------------------------------------------------


def _rows(t: torch.Tensor, part: int, parts: int) -> torch.Tensor:
    n = t.shape[0] // parts
    return t[part * n : (part + 1) * n]


def _cols(t: torch.Tensor, part: int, parts: int) -> torch.Tensor:
    n = t.shape[1] // parts
    return t[:, part * n : (part + 1) * n]


def load_fast_stage(
    config,
    plan: StagePlan,
    source,
    dtype: torch.dtype,
    device: torch.device,
    tp_rank: int = 0,
    tp_size: int = 1,
    scheme: str = "none",
) -> FastStage:
    """Build a stage on `meta` and fill it from HF checkpoint names, fusing (and tp-sharding) as it goes.

    `source` is a SyntheticTensors or CheckpointTensors (worker/checkpoint.py). Tensor parallel shards
    q/k/v and o by heads, gate/up and down by the intermediate size; embeddings, norms and the head
    are replicated. Each rank only ever holds its own slices on the device. With a quantization
    `scheme` (worker/quant.py) each matmul weight is quantized on the device as soon as it is there.
    """
    shape = Shape.of(config, tp_size)
    with torch.device("meta"):
        stage = FastStage(shape, plan, tp_rank, tp_size)
    r, n = tp_rank, tp_size
    layer_names = {
        f"model.layers.{i}.{part}"
        for i in range(plan.first_layer, plan.last_layer)
        for part in (
            "input_layernorm.weight", "post_attention_layernorm.weight",
            "self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight", "self_attn.o_proj.weight",
            "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight",
        )
    }
    extra = set()
    if plan.is_first:
        extra.add("model.embed_tokens.weight")
    if plan.is_last:
        extra |= {"model.norm.weight", "lm_head.weight"}
    tensors = _read(source, sorted(layer_names | extra), dtype, config)

    def put(param: nn.Parameter, value: torch.Tensor, name: str) -> nn.Parameter:
        if tuple(param.shape) != tuple(value.shape):
            raise ValueError(f"{name}: shape {list(value.shape)} does not fit {list(param.shape)} (config mismatch)")
        return nn.Parameter(value.to(device=device, dtype=dtype).contiguous(), requires_grad=False)

    def put_matmul(owner: nn.Module, attr: str, value: torch.Tensor, name: str) -> None:
        weight = put(getattr(owner, attr), value, name)
        if scheme == "none":
            setattr(owner, attr, weight)
        else:
            delattr(owner, attr)  # a quantized weight is a tuple of tensors, not one Parameter
            setattr(owner, attr, quant.quantize(weight.data, scheme))

    for local, block in enumerate(stage.layers):
        p = f"model.layers.{plan.first_layer + local}."
        q, k, v = (tensors[p + f"self_attn.{x}_proj.weight"] for x in "qkv")
        put_matmul(block, "wqkv", torch.cat([_rows(q, r, n), _rows(k, r, n), _rows(v, r, n)]), p + "qkv")
        put_matmul(block, "wo", _cols(tensors[p + "self_attn.o_proj.weight"], r, n), p + "o_proj")
        gate, up = tensors[p + "mlp.gate_proj.weight"], tensors[p + "mlp.up_proj.weight"]
        put_matmul(block, "w13", torch.cat([_rows(gate, r, n), _rows(up, r, n)]), p + "gate/up")
        put_matmul(block, "w2", _cols(tensors[p + "mlp.down_proj.weight"], r, n), p + "down_proj")
        block.attn_norm = put(block.attn_norm, tensors[p + "input_layernorm.weight"], p + "input_layernorm")
        block.mlp_norm = put(block.mlp_norm, tensors[p + "post_attention_layernorm.weight"], p + "post_attention_layernorm")
    if plan.is_first:
        stage.embed = put(stage.embed, tensors["model.embed_tokens.weight"], "model.embed_tokens.weight")
    if plan.is_last:
        stage.norm = put(stage.norm, tensors["model.norm.weight"], "model.norm.weight")
        put_matmul(stage, "head", tensors["lm_head.weight"], "lm_head.weight")
    left = [name for name, t in stage.named_parameters() if t.is_meta]
    if left:
        raise ValueError(f"parameters left unassigned after loading: {left[:5]}")
    stage.cos, stage.sin = rotary_tables(shape, device)
    stage.scheme = scheme
    return stage.eval()


def _read(source, names: list[str], dtype: torch.dtype, config) -> dict[str, torch.Tensor]:
    """Tensors by checkpoint name, on the CPU (sliced before they reach the device)."""
    cpu = torch.device("cpu")
    wanted = list(names)
    if getattr(config, "tie_word_embeddings", False) and "lm_head.weight" in wanted:
        index = getattr(source, "index", None)
        if index is not None and "lm_head.weight" not in index:
            wanted = [n if n != "lm_head.weight" else "model.embed_tokens.weight" for n in wanted]
    if hasattr(source, "get_many"):
        got = source.get_many(sorted(set(wanted)), dtype, cpu)
    else:
        got = {n: source.get(n, dtype, cpu) for n in set(wanted)}
    out = {}
    for name, want in zip(names, wanted):
        out[name] = got[want]
    return out


def fast_parameter_bytes(stage: FastStage) -> int:
    """Bytes of weights this rank holds (its stage, or its tp shard), quantized ones included."""
    total = sum(p.numel() * p.element_size() for p in stage.parameters())
    quantized = [b.__dict__.get(a) for b in stage.layers for a in ("wqkv", "wo", "w13", "w2")]
    quantized.append(stage.__dict__.get("head"))
    return total + sum(quant.weight_bytes(w) for w in quantized if w is not None)
