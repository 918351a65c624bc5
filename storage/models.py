"""Every table of dinf's SQLite database, in one module so there are no circular imports.

Clusters, experiments, runs (with their state history, tags, ranks and sacct accounting), measurements
per batch size (one column per field of METRICS.md, plus the raw JSON they came from), per-rank
statistics per measurement, completions and correctness results.

Times are Unix seconds (float), so rows sort and subtract without time-zone traps. Structured
values the UI never filters on (spec, parameters, token id lists) are JSON text columns.

This module holds shapes only: no engine (that is `storage.db`), no queries (`storage.repo`),
no reading of result bundles (`storage.ingest`).
"""

from __future__ import annotations

from sqlalchemy import Index, UniqueConstraint
from sqlalchemy import text as sql_text
from sqlmodel import Field, SQLModel

# The run states live in `storage.states` (no sqlmodel there); re-exported for callers that import
# them with the tables.
from storage.states import DRAFT, FINISHED_STATES, IMPORTED, SUBMIT_FAILED  # noqa: F401

# A change to these tables needs a step in `storage.migrations`, which also holds the schema's
# version number (DB_SCHEMA_VERSION): older files are migrated at open, newer ones refused untouched.


class SchemaVersion(SQLModel, table=True):
    """One row: the schema version that created (or last migrated) this file (`storage.migrations`)."""

    __tablename__ = "schema_version"

    id: int = Field(default=1, primary_key=True)
    version: int
    written_by: str = ""
    """The dinf version that wrote the row, for the refusal message."""


class ClusterRow(SQLModel, table=True):
    """A cluster runs were sent to, as configured when it was first used."""

    __tablename__ = "cluster"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True, index=True)
    backend: str
    """'local' or 'slurm'."""
    host: str | None = None
    config_json: str = "{}"
    created_at: float


class Experiment(SQLModel, table=True):
    """A group of runs made for one question (a sweep, a scaling study, a comparison)."""

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True)
    kind: str = Field(index=True)
    """The preset that made it (e.g. 'strong_scaling', 'batch_sweep', 'manual')."""
    parameters_json: str = "{}"
    notes: str = ""
    created_at: float


class Run(SQLModel, table=True):
    """One submission of one RunSpec (or one imported result bundle)."""

    __table_args__ = (Index("ix_run_state", "state"),)

    id: int | None = Field(default=None, primary_key=True)
    uid: str = Field(unique=True, index=True)
    """Filesystem-safe unique id; names the remote run directory (RunBundle.run_id)."""
    name: str
    cluster_id: int | None = Field(default=None, foreign_key="cluster.id", index=True)
    experiment_id: int | None = Field(default=None, foreign_key="experiment.id", index=True)
    mode: str
    spec_json: str
    resources_json: str = "{}"
    num_ranks: int = 1
    num_gpus: int = 0
    state: str = DRAFT
    state_reason: str | None = None
    job_id: str | None = None
    """The current scheduler job id."""
    job_ids_json: str = "[]"
    """Every job id this run has had (a resubmission or requeue adds one)."""
    run_dir: str | None = None
    script_path: str | None = None
    output_dir: str | None = None
    logs_dir: str | None = None
    local_results_dir: str | None = None
    """Where fetched result files lie on this machine."""
    bundle_digest: str | None = Field(default=None, unique=True)
    """sha256 of the ingested result.json; makes `dinf ingest DIR` of the same bundle idempotent."""
    error: str | None = None
    exit_code: int | None = None
    load_time_s: float | None = None
    environment_json: str = "{}"
    created_at: float
    submitted_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    ingested_at: float | None = None

    # The worker's engine: what the spec asked for until the bundle is ingested, then what the worker
    # reported (result.json "engine"). The server defaults are what runs and bundles from before the
    # fast path were, and what schema step 2 fills in for them (see ENGINE_BEFORE_FAST_PATH).
    engine_impl: str = Field(default="reference", sa_column_kwargs={"server_default": "reference"})
    """'fast', 'reference' (the Hugging Face modules) or 'deepspeed' (tp's AutoTP)."""
    engine_compiled: bool = Field(default=False, sa_column_kwargs={"server_default": sql_text("0")})
    engine_cuda_graphs: bool = Field(default=False, sa_column_kwargs={"server_default": sql_text("0")})
    engine_capture_s: float | None = None
    """Seconds spent compiling and capturing graphs at warm-up, before timing; None if none or unknown."""

    failure_json: str | None = None
    """How a failed job ended (remote.cluster.FailureSummary.to_dict()): the first rank to die, its
    node, its signal or exit code, then what followed. None for runs that did not fail (or from
    before schema step 3)."""

    quant_scheme: str = Field(default="none", sa_column_kwargs={"server_default": "none"})
    """Weight-only quantization the run asked for (spec.quant), then what its bundle reports:
    'none', 'int8' or 'int4'."""
    accuracy_json: str | None = None
    """result.json "accuracy" of a run made with spec.score: the model against the unquantized one,
    judged in the same job, with its noise floor. None when the run did not score."""

    notes: str = Field(default="", sa_column_kwargs={"server_default": ""})
    """The user's free text about the run (`dinf note`, the run screen's `t`); shown as data, never markup."""


ENGINE_BEFORE_FAST_PATH: dict[str, object] = {
    "engine_impl": "reference", "engine_compiled": False, "engine_cuda_graphs": False, "engine_capture_s": None,
}
"""The engine columns of a run whose spec has no `impl` or whose bundle has no `engine`: the worker
then had only the reference implementation, run eagerly."""


class RunTag(SQLModel, table=True):
    """One tag on one run (`storage.tags` says what a tag may be); a run has any number of them."""

    __tablename__ = "run_tag"
    __table_args__ = (UniqueConstraint("run_id", "tag"), Index("ix_run_tag_tag", "tag"))

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="run.id")  # the unique (run_id, tag) index serves lookups by run
    tag: str


class StateChange(SQLModel, table=True):
    """One state a run entered, and when; the run's timeline."""

    __tablename__ = "state_change"

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="run.id", index=True)
    state: str
    reason: str | None = None
    at: float


class RunRank(SQLModel, table=True):
    """What one rank of a finished run held (result.json `ranks`)."""

    __tablename__ = "run_rank"
    __table_args__ = (UniqueConstraint("run_id", "rank"),)

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="run.id", index=True)
    rank: int
    host: str | None = None
    device: str | None = None
    stage: int | None = None
    first_layer: int | None = None
    last_layer_exclusive: int | None = None
    param_bytes: int | None = None
    load_time_s: float | None = None


class Measurement(SQLModel, table=True):
    """One batch size of one run: every METRICS.md field, as columns, and the raw record."""

    __table_args__ = (UniqueConstraint("run_id", "batch_size"),)

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="run.id", index=True)
    batch_size: int
    num_requests: int | None = None
    max_new_tokens: int | None = None
    prompt_tokens: int | None = None
    output_tokens: int | None = None
    repeats: int | None = None
    num_gpus: int | None = None
    load_time_s: float | None = None

    ttft_median_s: float | None = None
    ttft_p90_s: float | None = None
    ttft_mean_s: float | None = None
    ttft_ci95_s: float | None = None
    ttft_n: int | None = None

    tpot_median_s: float | None = None
    tpot_p90_s: float | None = None
    tpot_mean_s: float | None = None
    tpot_ci95_s: float | None = None
    tpot_n: int | None = None

    itl_median_s: float | None = None
    itl_p90_s: float | None = None
    itl_mean_s: float | None = None
    itl_ci95_s: float | None = None
    itl_n: int | None = None

    e2e_median_s: float | None = None
    e2e_p90_s: float | None = None
    e2e_mean_s: float | None = None
    e2e_ci95_s: float | None = None
    e2e_n: int | None = None

    prefill_median_s: float | None = None
    prefill_p90_s: float | None = None
    prefill_mean_s: float | None = None
    prefill_ci95_s: float | None = None
    prefill_n: int | None = None

    decode_throughput_tok_s: float | None = None
    output_throughput_tok_s: float | None = None
    total_throughput_tok_s: float | None = None
    per_gpu_output_tok_s: float | None = None

    wall_s_json: str = "[]"
    prefill_s_json: str = "[]"
    raw_json: str = "{}"

    # Schema step 5 appended these (a migrated file's columns come after raw_json too, so a new file
    # is shaped like a migrated one). NULL where the bundle had no such part: blank, never zero.
    ttft_p99_s: float | None = None
    ttft_std_s: float | None = None
    ttft_min_s: float | None = None
    ttft_max_s: float | None = None
    tpot_p99_s: float | None = None
    tpot_std_s: float | None = None
    tpot_min_s: float | None = None
    tpot_max_s: float | None = None
    itl_p99_s: float | None = None
    itl_std_s: float | None = None
    itl_min_s: float | None = None
    itl_max_s: float | None = None
    e2e_p99_s: float | None = None
    e2e_std_s: float | None = None
    e2e_min_s: float | None = None
    e2e_max_s: float | None = None
    prefill_p99_s: float | None = None
    prefill_std_s: float | None = None
    prefill_min_s: float | None = None
    prefill_max_s: float | None = None


# The Stat-valued fields of a result.json measurement and the column prefix each one fills.
STAT_COLUMNS: dict[str, str] = {
    "ttft_s": "ttft",
    "tpot_s": "tpot",
    "itl_s": "itl",
    "e2e_s": "e2e",
    "prefill_latency_s": "prefill",
}
STAT_PARTS: dict[str, str] = {
    "n": "n", "median": "median_s", "p90": "p90_s", "p99": "p99_s", "mean": "mean_s", "std": "std_s",
    "min": "min_s", "max": "max_s", "ci95": "ci95_s",
}
"""Each part of a Stat (`worker.contract.stat_summary`) and its column's suffix, in the order shown."""


class RankStat(SQLModel, table=True):
    """One rank's memory and time split during one measurement."""

    __tablename__ = "rank_stat"
    __table_args__ = (UniqueConstraint("measurement_id", "rank"),)

    id: int | None = Field(default=None, primary_key=True)
    measurement_id: int = Field(foreign_key="measurement.id", index=True)
    rank: int
    peak_allocated_bytes: int | None = None
    peak_reserved_bytes: int | None = None
    peak_rss_bytes: int | None = None
    compute_s: float | None = None
    comm_s: float | None = None
    idle_s: float | None = None
    bubble_pct: float | None = None
    exposed_comm_pct: float | None = None


class Completion(SQLModel, table=True):
    """One generated request (first repeat) of one batch size."""

    __table_args__ = (UniqueConstraint("run_id", "batch_size", "index"),)

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="run.id", index=True)
    batch_size: int
    index: int
    prompt: str = ""
    text: str = ""
    prompt_ids_json: str = "[]"
    output_ids_json: str = "[]"
    topk_ids_json: str = "[]"


class CorrectnessResult(SQLModel, table=True):
    """Greedy-token agreement of a run with its baseline (comparison.json), per batch size.

    batch_size -1 is the whole run (every batch size pooled); a NULL there would defeat the unique
    constraint that keeps re-ingestion idempotent.
    """

    __tablename__ = "correctness_result"
    __table_args__ = (UniqueConstraint("run_id", "batch_size"),)

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="run.id", index=True)
    batch_size: int = -1
    reference: str | None = None
    """The baseline the run was compared with (its output directory, as `compare` recorded it)."""
    num_prompts: int | None = None
    num_exact: int | None = None
    exact_match_rate: float | None = None
    first_divergences_json: str = "[]"
    """Per prompt: the index of the first differing token, or null when identical."""
    topk_agreement_rate: float | None = None
    """Of the diverging prompts: share where each side's token is in the other's top-k (None: none diverged)."""
    raw_json: str = "{}"


class Accounting(SQLModel, table=True):
    """sacct's record of one job of a run."""

    __table_args__ = (UniqueConstraint("run_id", "job_id"),)

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="run.id", index=True)
    job_id: str
    state: str | None = None
    exit_code: str | None = None
    elapsed: str | None = None
    nodelist: str | None = None
    alloc_tres: str | None = None
    max_rss: str | None = None
    total_cpu: str | None = None
    raw_json: str = "{}"
    recorded_at: float
