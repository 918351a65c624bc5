"""Weights: synthetic tensors made per (seed, name), checkpoint writing, and per-stage loading.

A stage is built on the `meta` device and only its own tensors are materialised — generated from
(seed, tensor name) for a synthetic model, or read one by one from a Hugging Face directory
(safetensors through `safe_open`, `pytorch_model.bin` through an mmap'd `torch.load`). No rank ever
builds the full model, and `load_state_dict(strict=True, assign=True)` + a meta check fail loudly on
any parameter left unassigned. Because every tensor depends only on (seed, name), any partition of the
model yields exactly the tensors the single-process baseline uses.

It does not run models (`llama.py`, `reference_model.py`) nor decide which part a rank holds (`strategy.py`).
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from transformers import LlamaConfig

from worker.contract import ModelConfig
from worker.partition import StagePlan
from worker.reference_model import LlamaStage, prepare_config

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
INIT_STD = 0.02  # random normal weights (never zeros or constants: timings on those are meaningless)


class CheckpointError(RuntimeError):
    """A model directory that is missing, incomplete or does not match its config."""


def llama_config(cfg: ModelConfig) -> LlamaConfig:
    """The HF config of a named synthetic model."""
    config = LlamaConfig(
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads,
        vocab_size=cfg.vocab_size,
        max_position_embeddings=cfg.max_position_embeddings,
        rms_norm_eps=cfg.rms_norm_eps,
        rope_theta=cfg.rope_theta,
        bos_token_id=cfg.bos_token_id,
        eos_token_id=cfg.eos_token_id,
        pad_token_id=cfg.pad_token_id,
        tie_word_embeddings=cfg.tie_word_embeddings,
    )
    return prepare_config(config)


def load_config(model_dir: str | os.PathLike) -> LlamaConfig:
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{model_dir}: no config.json; is this a Hugging Face model directory?")
    return prepare_config(LlamaConfig.from_pretrained(str(model_dir)))


# --- synthetic weights ------------------------------------------------------------------------


def _name_seed(seed: int, name: str) -> int:
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def synthetic_tensor(seed: int, name: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """The tensor `name` of the synthetic model `seed`: N(0, 0.02) from its own generator; norms are 1.

    Generated on the CPU in fp32 then cast, so every device and partition gets identical values.
    """
    if name.endswith("norm.weight"):
        return torch.ones(shape, dtype=dtype)
    gen = torch.Generator().manual_seed(_name_seed(seed, name))
    return torch.empty(shape, dtype=torch.float32).normal_(0.0, INIT_STD, generator=gen).to(dtype)


def full_tensor_shapes(config: LlamaConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor name of the full model with its shape (from a meta build, no memory used)."""
    with torch.device("meta"):
        stage = LlamaStage(config, StagePlan.whole(config.num_hidden_layers))
    names = stage.checkpoint_names()
    return {names[local]: tuple(t.shape) for local, t in stage.state_dict().items() if local in names}


class SyntheticTensors:
    """Tensor source of a synthetic model."""

    def __init__(self, seed: int, config: LlamaConfig):
        self.seed = seed
        self.shapes = full_tensor_shapes(config)

    def get(self, name: str, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        return synthetic_tensor(self.seed, name, self.shapes[name], dtype).to(device)


# --- checkpoint directories -------------------------------------------------------------------


class CheckpointTensors:
    """Tensor source of a local HF directory; opens each file only for the tensors asked of it."""

    def __init__(self, model_dir: str | os.PathLike):
        self.dir = Path(model_dir)
        self.index = checkpoint_index(self.dir)
        self._bins: dict[str, dict[str, torch.Tensor]] = {}

    def shape(self, name: str) -> tuple[int, ...]:
        file = self.index[name]
        if file.endswith(".safetensors"):
            from safetensors import safe_open

            with safe_open(str(self.dir / file), framework="pt") as f:
                return tuple(f.get_slice(name).get_shape())
        return tuple(self._bin(file)[name].shape)

    def _bin(self, file: str) -> dict[str, torch.Tensor]:
        if file not in self._bins:  # mmap'd: untouched tensors are never read
            self._bins[file] = torch.load(self.dir / file, map_location="cpu", mmap=True, weights_only=True)
        return self._bins[file]

    def get_many(self, names: list[str], dtype: torch.dtype, device: torch.device) -> dict[str, torch.Tensor]:
        from safetensors import safe_open

        out: dict[str, torch.Tensor] = {}
        by_file: dict[str, list[str]] = {}
        for name in names:
            by_file.setdefault(self.index[name], []).append(name)
        for file, file_names in by_file.items():
            if file.endswith(".safetensors"):
                target = str(device) if device.type == "cuda" else "cpu"
                with safe_open(str(self.dir / file), framework="pt", device=target) as f:
                    for name in file_names:
                        out[name] = f.get_tensor(name).to(dtype)
            else:
                tensors = self._bin(file)
                for name in file_names:
                    out[name] = tensors[name].to(device=device, dtype=dtype)
        return out


def checkpoint_index(model_dir: Path) -> dict[str, str]:
    """Tensor name -> file (relative to model_dir), for single-file or sharded safetensors / .bin."""
    if not model_dir.is_dir():
        raise CheckpointError(f"model directory {model_dir} does not exist")
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index_path = model_dir / index_name
        if index_path.is_file():
            weight_map = json.loads(index_path.read_text())["weight_map"]
            for file in set(weight_map.values()):
                if not (model_dir / file).is_file():
                    raise CheckpointError(f"{index_path} names {file}, which is missing")
            return dict(weight_map)
    if (model_dir / "model.safetensors").is_file():
        from safetensors import safe_open

        with safe_open(str(model_dir / "model.safetensors"), framework="pt") as f:
            return {name: "model.safetensors" for name in f.keys()}
    if (model_dir / "pytorch_model.bin").is_file():
        sd = torch.load(model_dir / "pytorch_model.bin", map_location="cpu", mmap=True, weights_only=True)
        return {name: "pytorch_model.bin" for name in sd}
    raise CheckpointError(
        f"{model_dir} holds no weights (model.safetensors, model.safetensors.index.json, pytorch_model.bin "
        "or pytorch_model.bin.index.json); write one with `dinf-worker make-checkpoint`"
    )


def check_checkpoint(model_dir: str | os.PathLike) -> LlamaConfig:
    """Pre-flight: the directory has a config and every tensor the config needs, with the right shape."""
    config = load_config(model_dir)
    tensors = CheckpointTensors(model_dir)
    problems = []
    expected = full_tensor_shapes(config)
    extra = sorted(n for n in tensors.index if n not in expected and "rotary_emb" not in n)
    if extra:
        problems.append(
            f"{len(extra)} tensors the config does not use, e.g. {extra[0]} "
            f"(config.json says {config.num_hidden_layers} layers)"
        )
    for name, shape in expected.items():
        if name not in tensors.index:
            if name == "lm_head.weight" and config.tie_word_embeddings:
                continue
            problems.append(f"{name} is missing")
            continue
        found = tensors.shape(name)
        if found != shape:
            problems.append(f"{name} has shape {list(found)}, config.json implies {list(shape)}")
    if not any((Path(model_dir) / f).is_file() for f in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")):
        problems.append("no tokenizer (tokenizer.json, tokenizer.model or tokenizer_config.json) beside the weights")
    if problems:
        shown = "; ".join(problems[:5]) + (f"; ... ({len(problems)} problems)" if len(problems) > 5 else "")
        raise CheckpointError(f"checkpoint {model_dir} does not match its config.json: {shown}")
    return config


# --- building a stage -------------------------------------------------------------------------


def load_stage(
    config: LlamaConfig,
    plan: StagePlan,
    source: SyntheticTensors | CheckpointTensors,
    dtype: torch.dtype,
    device: torch.device,
) -> LlamaStage:
    """Build a stage on `meta`, then materialise only its tensors, straight onto `device`."""
    with torch.device("meta"):
        stage = LlamaStage(config, plan)
    names = stage.checkpoint_names()
    if isinstance(source, CheckpointTensors):
        if config.tie_word_embeddings and "lm_head.weight" in names and "lm_head.weight" not in source.index:
            names["lm_head.weight"] = "model.embed_tokens.weight"
        missing = [n for n in names.values() if n not in source.index]
        if missing:
            raise CheckpointError(f"checkpoint {source.dir} lacks {len(missing)} tensors, e.g. {missing[:3]}")
        loaded = source.get_many(list(names.values()), dtype, device)
    else:
        loaded = {n: source.get(n, dtype, device) for n in names.values()}
    state = {local: loaded[ckpt] for local, ckpt in names.items()}
    expected = {k: tuple(v.shape) for k, v in stage.state_dict().items() if k in names}
    wrong = [f"{names[k]} {list(state[k].shape)} != {list(s)}" for k, s in expected.items() if tuple(state[k].shape) != s]
    if wrong:
        raise CheckpointError(f"tensor shapes do not match the config: {'; '.join(wrong[:5])}")
    # The rotary inv_freq buffer is non-persistent, hence not part of the strict check.
    stage.load_state_dict(state, strict=True, assign=True)
    unassigned = [n for n, p in stage.named_parameters() if p.is_meta]
    if unassigned:
        raise CheckpointError(f"parameters left unassigned after loading: {unassigned[:5]}")
    stage.rotary_emb = type(stage.rotary_emb)(stage.config)
    stage.to(device)
    stage.eval()
    return stage


# --- writing a checkpoint ---------------------------------------------------------------------


def write_synthetic_checkpoint(cfg: ModelConfig, seed: int, out_dir: str | os.PathLike, dtype: str) -> Path:
    """config.json + model.safetensors (tensor by tensor from (seed, name)) + a trained tokenizer."""
    from safetensors.torch import save_file

    from worker.tokenizer import train_tokenizer

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = llama_config(cfg)
    config.dtype = dtype
    source = SyntheticTensors(seed, config)
    torch_dtype = DTYPES[dtype]

    def make(name: str) -> torch.Tensor:
        return source.get(name, torch_dtype, torch.device("cpu"))

    with ThreadPoolExecutor(max_workers=min(16, os.cpu_count() or 1)) as pool:  # torch drops the GIL
        tensors = dict(zip(source.shapes, pool.map(make, list(source.shapes))))
    tmp = out / "model.safetensors.partial"
    save_file(tensors, str(tmp), metadata={"format": "pt", "dinf_seed": str(seed)})
    os.replace(tmp, out / "model.safetensors")
    config.save_pretrained(str(out))
    train_tokenizer(cfg).save_pretrained(str(out))
    return out


def load_causal_lm(config: LlamaConfig, source: SyntheticTensors | CheckpointTensors, dtype: torch.dtype):
    """The whole HF `LlamaForCausalLM` on the CPU (tp mode: DeepSpeed AutoTP shards it onto the device).

    Built on meta and assigned tensor by tensor; checkpoint tensors stay mmap-backed until AutoTP
    slices them, so each rank's device only ever receives its own shard.
    """
    from transformers import LlamaForCausalLM
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    names = [n for n in model.state_dict() if not (config.tie_word_embeddings and n == "lm_head.weight")]
    cpu = torch.device("cpu")
    if isinstance(source, CheckpointTensors):
        state = source.get_many(names, dtype, cpu)
    else:
        state = {n: source.get(n, dtype, cpu) for n in names}
    model.load_state_dict(state, strict=not config.tie_word_embeddings, assign=True)
    if config.tie_word_embeddings:
        model.tie_weights()
    unassigned = [n for n, p in model.named_parameters() if p.is_meta]
    if unassigned:
        raise CheckpointError(f"parameters left unassigned after loading: {unassigned[:5]}")
    model.model.rotary_emb = LlamaRotaryEmbedding(model.config)
    model.config._attn_implementation = "sdpa"
    return model.eval()
