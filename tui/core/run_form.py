"""The new-run form's data: raw field texts -> a RunSpec and Resources, or problems per field.

Headless so it is tested without a terminal. Spec rules come from `worker.contract.RunSpec.problems`
(the same check the worker runs); this module adds the parsing of texts and the checks of the
Slurm resources, and says which form field each problem belongs under.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from remote.cluster import Resources
from worker.contract import MODEL_CONFIGS, ModelSource, RunSpec

# Slurm's --time formats: minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS.
_TIME_LIMIT = re.compile(r"^(\d+|\d+:\d{2}|\d+:\d{2}:\d{2}|\d+-\d+|\d+-\d+:\d{2}|\d+-\d+:\d{2}:\d{2})$")
# A Slurm name (partition, account, QoS): no spaces or shell-ish characters.
_SLURM_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")

# RunSpec.problems() keys -> the form field that shows the message.
SPEC_FIELD = {
    "run_name": "name",
    "model.source": "source",
    "model.config": "model_config",
    "model.seed": "seed",
    "model.path": "checkpoint",
    "mode": "mode",
    "pp_size": "ranks_per_node",
    "pp_layer_split": "ranks_per_node",
    "micro_batches": "micro_batches",
    "batch_sizes": "batch_sizes",
    "max_new_tokens": "max_new_tokens",
    "dtype": "dtype",
}


@dataclass
class RunForm:
    """Every field's text as typed (Selects give their value)."""

    cluster: str = "local"
    name: str = "run"
    source: str = "synthetic"
    model_config: str = "tiny"
    seed: str = "0"
    checkpoint: str = ""
    mode: str = "pp"
    nodes: str = "1"
    ranks_per_node: str = "2"
    gpus_per_node: str = "0"
    batch_sizes: str = "1,2"
    max_new_tokens: str = "16"
    micro_batches: str = "1"
    dtype: str = "float32"
    partition: str = ""
    account: str = ""
    qos: str = ""
    time_limit: str = ""
    constraint: str = ""
    container_image: str = ""


@dataclass
class CheckedForm:
    spec: RunSpec | None = None
    resources: Resources | None = None
    problems: dict[str, str] = field(default_factory=dict)
    """form field name -> what is wrong and what to do."""

    @property
    def ok(self) -> bool:
        return not self.problems and self.spec is not None and self.resources is not None


def follow_change(form: RunForm, changed: str) -> dict[str, str]:
    """The fields that follow from one the user just changed, so that defaults stay coherent: a
    rank per GPU (ranks follow GPUs per node), single means one rank on one node, CPU ranks compute
    in float32 and GPU ranks in float16. Returns only fields whose text would change; the user may
    still edit any of them afterwards (the checks then say what is inconsistent)."""
    gpus = int(form.gpus_per_node) if form.gpus_per_node.strip().isdigit() else None
    updates: dict[str, str] = {}
    if changed == "mode" and form.mode == "single":
        updates.update(nodes="1", ranks_per_node="1")
        if gpus:
            updates["gpus_per_node"] = "1"
    elif changed == "mode" and form.ranks_per_node.strip() == "1":  # leaving single: 2 ranks, or a rank per GPU
        ranks = gpus if gpus and gpus > 1 else 2
        updates["ranks_per_node"] = str(ranks)
        if gpus:
            updates["gpus_per_node"] = str(ranks)
    elif changed == "gpus_per_node" and gpus is not None:
        if gpus > 0 and form.mode != "single":
            updates["ranks_per_node"] = str(gpus)
        if gpus == 0 and form.dtype != "float32":
            updates["dtype"] = "float32"  # half precision on CPUs is slow, and not every op has it
        elif gpus > 0 and form.dtype == "float32":
            updates["dtype"] = "float16"
    return {name: value for name, value in updates.items() if getattr(form, name) != value}


def _integer(text: str, name: str, problems: dict[str, str], minimum: int) -> int | None:
    try:
        value = int(text.strip())
    except ValueError:
        problems[name] = f"must be a whole number, got {text!r}"
        return None
    if value < minimum:
        problems[name] = f"must be at least {minimum}"
        return None
    return value


def check_form(form: RunForm) -> CheckedForm:
    """Parse and validate every field; all problems at once, each under its field."""
    problems: dict[str, str] = {}
    seed = _integer(form.seed, "seed", problems, 0) if form.source == "synthetic" else 0
    nodes = _integer(form.nodes, "nodes", problems, 1)
    ranks_per_node = _integer(form.ranks_per_node, "ranks_per_node", problems, 1)
    gpus_per_node = _integer(form.gpus_per_node, "gpus_per_node", problems, 0)
    max_new_tokens = _integer(form.max_new_tokens, "max_new_tokens", problems, 1)
    micro_batches = _integer(form.micro_batches, "micro_batches", problems, 1)
    batch_sizes: list[int] = []
    for part in [p for p in re.split(r"[,\s]+", form.batch_sizes.strip()) if p]:
        if not part.isdigit() or int(part) < 1:
            problems["batch_sizes"] = f"comma-separated whole numbers >= 1, e.g. 1,2,4 (bad: {part!r})"
            break
        batch_sizes.append(int(part))
    else:
        if not batch_sizes:
            problems["batch_sizes"] = "give at least one batch size, e.g. 1,2,4"
    if gpus_per_node and ranks_per_node and gpus_per_node != ranks_per_node:
        problems["gpus_per_node"] = (
            f"one rank per GPU: {ranks_per_node} ranks per node need {ranks_per_node} GPUs per node "
            "(or 0 to run on CPUs)"
        )
    for name in ("partition", "account", "qos", "constraint"):
        value = getattr(form, name).strip()
        if value and name != "constraint" and not _SLURM_NAME.match(value):
            problems[name] = "letters, digits, '_', '.' and '-' only"
    if form.time_limit.strip() and not _TIME_LIMIT.match(form.time_limit.strip()):
        problems["time_limit"] = "Slurm time: minutes, MM:SS, HH:MM:SS or D-HH:MM:SS (e.g. 0:30:00)"
    if form.source == "checkpoint" and not form.checkpoint.strip():
        problems["checkpoint"] = "the path of a Hugging Face model directory on the cluster"
    if problems:
        return CheckedForm(problems=problems)

    assert nodes and ranks_per_node and max_new_tokens and micro_batches is not None
    world_size = nodes * ranks_per_node
    spec = RunSpec(
        run_name=form.name.strip(),
        model=ModelSource(
            source=form.source,
            config=form.model_config,
            seed=seed or 0,
            path=form.checkpoint.strip() or None,
        ),
        dtype=form.dtype,
        mode=form.mode,
        micro_batches=micro_batches,
        batch_sizes=batch_sizes,
        max_new_tokens=max_new_tokens,
    )
    for key, why in spec.problems(world_size).items():
        problems.setdefault(SPEC_FIELD.get(key, "general"), why)
    config = MODEL_CONFIGS.get(form.model_config) if form.source == "synthetic" else None
    if form.mode == "tp" and config is not None and config.num_attention_heads % world_size:
        problems.setdefault(
            "ranks_per_node",
            f"tensor parallel splits {config.num_attention_heads} attention heads; "
            f"{world_size} ranks do not divide them",
        )
    resources = Resources(
        nodes=nodes,
        tasks_per_node=ranks_per_node,
        gpus_per_node=gpus_per_node or 0,
        partition=form.partition.strip() or None,
        account=form.account.strip() or None,
        qos=form.qos.strip() or None,
        time_limit=form.time_limit.strip() or None,
        constraint=form.constraint.strip() or None,
        container_image=form.container_image.strip() or None,
    )
    return CheckedForm(spec=spec, resources=resources, problems=problems)
