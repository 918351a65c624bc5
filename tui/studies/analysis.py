"""Derived metrics over measurement rows: scaling, memory ratios, correctness, diff-only tables.

Pure functions over plain data. A `Point` is one measurement (one run at one batch size) reduced to
the numbers the studies need; `point_from_measurement` builds it from a result bundle's measurement
record (`worker.contract`), so storage rows, fixture bundles and live results all land here alike.
The definitions are those of `shared/METRICS.md`:

- strong scaling (fixed total work): S(N) = T(1)/T(N), efficiency E = S/N
- weak scaling (work proportional to N): E_w(N) = T(1)/T(N)
- throughput scaling: X(N) / (N * X(1)), X = output tokens/s
- memory ratio: peak memory per rank (the largest rank) over the baseline's
- correctness: exact-match rate of greedy ids vs the baseline, first divergence per prompt, and
  whether each side's token is in the other's top-k at the first divergence

N is the GPU count relative to the baseline's (so a 1-node baseline of 4 GPUs gives N = 2 at 8 GPUs).
This module reads no database, draws nothing and formats no reports.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from worker.correctness import check_completion

# --- measurement points ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RankStat:
    """One rank's memory and (with profile=True) time split, for one measurement."""

    rank: int
    peak_bytes: int | None = None
    """Peak allocated device memory, or peak RSS where there is no device."""
    compute_s: float | None = None
    comm_s: float | None = None
    idle_s: float | None = None
    bubble_pct: float | None = None
    exposed_comm_pct: float | None = None


@dataclass(frozen=True)
class Point:
    """One run at one batch size: the numbers every study derives from."""

    run_id: Any
    label: str
    """How the run is named in tables and legends (run name, or mode and size)."""
    mode: str
    num_gpus: int
    """GPUs used (PP x TP x DP); on CPU runs, the number of ranks."""
    num_nodes: int
    batch_size: int
    num_requests: int
    output_tokens: int
    wall_s: float | None
    """Median wall time of the timed repeats over the whole workload."""
    repeats: int = 0
    wall_samples: tuple[float, ...] = ()
    """Wall time of every timed repeat, for the spread the report states."""
    output_tok_s: float | None = None
    total_tok_s: float | None = None
    decode_tok_s: float | None = None
    ttft_s: float | None = None
    tpot_s: float | None = None
    e2e_s: float | None = None
    ranks: tuple[RankStat, ...] = field(default_factory=tuple)
    window: tuple[float, float] | None = None
    """Unix seconds from the first timed repeat's start to the last one's end (None: not recorded)."""
    timeline: Any = None
    """A profiled measurement's few decode steps per rank (`tui.studies.timeline.Timeline`), else None."""

    @property
    def peak_bytes(self) -> int | None:
        """The largest rank's peak memory: the one that decides whether a batch fits."""
        values = [r.peak_bytes for r in self.ranks if r.peak_bytes is not None]
        return max(values) if values else None

    @property
    def wall_spread(self) -> float | None:
        """(max - min) / median of the repeats' wall times: how much a rerun moved."""
        if len(self.wall_samples) < 2 or not self.wall_s:
            return None
        return (max(self.wall_samples) - min(self.wall_samples)) / self.wall_s


def _median(values: Sequence[float]) -> float | None:
    ordered = sorted(v for v in values if v is not None)
    if not ordered:
        return None
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def _stat_median(stat: Any) -> float | None:
    if isinstance(stat, Mapping):
        value = stat.get("median")
        return float(value) if value is not None else None
    if isinstance(stat, (int, float)):
        return float(stat)
    return None


def _rank_stat(record: Mapping[str, Any]) -> RankStat:
    peak = record.get("peak_allocated_bytes")
    if peak is None:
        peak = record.get("peak_rss_bytes")
    return RankStat(
        rank=int(record.get("rank", 0)),
        peak_bytes=int(peak) if peak is not None else None,
        compute_s=record.get("compute_s"),
        comm_s=record.get("comm_s"),
        idle_s=record.get("idle_s"),
        bubble_pct=record.get("bubble_pct"),
        exposed_comm_pct=record.get("exposed_comm_pct"),
    )


def point_from_measurement(
    result: Mapping[str, Any], measurement: Mapping[str, Any], *, run_id: Any = None, label: str | None = None
) -> Point:
    """A `Point` from one entry of a result bundle's `measurements` (layout in worker.contract)."""
    spec = result.get("spec") or {}
    mode = str(spec.get("mode", "single"))
    hosts = (result.get("environment") or {}).get("hosts") or []
    num_gpus = int(result.get("num_gpus") or 0) or int(result.get("world_size") or 1)
    wall = measurement.get("wall_s")
    wall_s = _median(wall) if isinstance(wall, list) else _stat_median(wall)
    return Point(
        run_id=run_id if run_id is not None else result.get("run_name"),
        label=label or str(result.get("run_name") or f"{mode}x{num_gpus}"),
        mode=mode,
        num_gpus=num_gpus,
        num_nodes=max(1, len(set(hosts))),
        batch_size=int(measurement["batch_size"]),
        num_requests=int(measurement.get("num_requests") or 0),
        output_tokens=int(measurement.get("output_tokens") or 0),
        wall_s=wall_s,
        repeats=int(measurement.get("repeats") or (len(wall) if isinstance(wall, list) else 0)),
        wall_samples=tuple(float(v) for v in wall) if isinstance(wall, list) else (),
        output_tok_s=_stat_median(measurement.get("output_throughput_tok_s")),
        total_tok_s=_stat_median(measurement.get("total_throughput_tok_s")),
        decode_tok_s=_stat_median(measurement.get("decode_throughput_tok_s")),
        ttft_s=_stat_median(measurement.get("ttft_s")),
        tpot_s=_stat_median(measurement.get("tpot_s")),
        e2e_s=_stat_median(measurement.get("e2e_s")),
        ranks=tuple(_rank_stat(r) for r in measurement.get("per_rank") or []),
        window=timed_window(measurement),
        timeline=_timeline(measurement),
    )


def _timeline(measurement: Mapping[str, Any]):
    from tui.studies.timeline import timeline_from

    return timeline_from(measurement.get("timeline"))


def timed_window(measurement: Mapping[str, Any]) -> tuple[float, float] | None:
    """A measurement's `timed_window_unix` as (start, end), or None when absent or malformed."""
    window = measurement.get("timed_window_unix")
    if (isinstance(window, (list, tuple)) and len(window) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in window)
            and window[1] >= window[0]):
        return float(window[0]), float(window[1])
    return None


def points_from_result(result: Mapping[str, Any], *, run_id: Any = None, label: str | None = None) -> list[Point]:
    """Every measurement of one result bundle, in batch-size order."""
    points = [point_from_measurement(result, m, run_id=run_id, label=label) for m in result.get("measurements", [])]
    return sorted(points, key=lambda p: p.batch_size)


# --- scaling ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScalingRow:
    """One point of a scaling series with everything derived against the baseline."""

    point: Point
    n: float
    """GPU count relative to the baseline's."""
    speedup: float | None
    """T(1)/T(N). For weak scaling this is the weak-scaling efficiency E_w."""
    efficiency: float | None
    """S/N (strong scaling); equal to `speedup` for weak scaling, where the ideal is 1."""
    throughput_scaling: float | None
    memory_ratio: float | None


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


def speedup(baseline_wall_s: float | None, wall_s: float | None) -> float | None:
    """S(N) = T(1) / T(N)."""
    return ratio(baseline_wall_s, wall_s)


def efficiency(speedup_value: float | None, n: float) -> float | None:
    """E = S / N."""
    return ratio(speedup_value, n)


def throughput_scaling(baseline_tok_s: float | None, tok_s: float | None, n: float) -> float | None:
    """X(N) / (N * X(1))."""
    if baseline_tok_s is None or tok_s is None or n == 0:
        return None
    return ratio(tok_s, n * baseline_tok_s)


def memory_ratio(baseline: Point, point: Point) -> float | None:
    """Largest rank's peak memory over the baseline's (below 1: each GPU holds less)."""
    return ratio(point.peak_bytes, baseline.peak_bytes)


def _relative_gpus(baseline: Point, point: Point) -> float:
    return point.num_gpus / baseline.num_gpus if baseline.num_gpus else float(point.num_gpus)


def strong_scaling(baseline: Point, points: Iterable[Point]) -> list[ScalingRow]:
    """Fixed total work: speedup, efficiency, throughput scaling and memory ratio, by GPU count.

    The baseline is included as the first row (N = 1, S = 1) when it is not among `points`.
    """
    return _scaling_rows(baseline, points, efficiency)


def weak_scaling(baseline: Point, points: Iterable[Point]) -> list[ScalingRow]:
    """Work proportional to N: E_w(N) = T(1)/T(N) (ideal 1), plus throughput scaling."""
    return _scaling_rows(baseline, points, lambda s, _n: s)


def _scaling_rows(
    baseline: Point, points: Iterable[Point], efficiency_of: Callable[[float | None, float], float | None]
) -> list[ScalingRow]:
    """One row per GPU count, baseline first; the studies differ only in how S becomes efficiency."""
    series = list(points)
    if baseline not in series:
        series.insert(0, baseline)
    rows = []
    for point in sorted(series, key=lambda p: p.num_gpus):
        n = _relative_gpus(baseline, point)
        s = speedup(baseline.wall_s, point.wall_s)
        rows.append(
            ScalingRow(
                point=point,
                n=n,
                speedup=s,
                efficiency=efficiency_of(s, n),
                throughput_scaling=throughput_scaling(baseline.output_tok_s, point.output_tok_s, n),
                memory_ratio=memory_ratio(baseline, point),
            )
        )
    return rows


@dataclass(frozen=True)
class BatchComparison:
    """A parallel mode against the 1-GPU baseline at the same batch size."""

    batch_size: int
    baseline: Point
    point: Point
    speedup: float | None
    """Output tok/s of the mode over the baseline's (>1: the extra GPUs bought throughput)."""
    efficiency: float | None
    memory_ratio: float | None


def compare_by_batch(baseline: Sequence[Point], points: Sequence[Point]) -> list[BatchComparison]:
    """Pair a mode's batch sweep with the baseline's, batch size by batch size (shared sizes only)."""
    by_size = {p.batch_size: p for p in baseline}
    rows = []
    for point in sorted(points, key=lambda p: p.batch_size):
        base = by_size.get(point.batch_size)
        if base is None:
            continue
        s = ratio(point.output_tok_s, base.output_tok_s)
        rows.append(
            BatchComparison(
                batch_size=point.batch_size,
                baseline=base,
                point=point,
                speedup=s,
                efficiency=efficiency(s, _relative_gpus(base, point)),
                memory_ratio=memory_ratio(base, point),
            )
        )
    return rows


@dataclass(frozen=True)
class TimeSplit:
    """Share of one rank's measured time spent computing, communicating and idle (sums to 1)."""

    rank: int
    compute: float
    comm: float
    idle: float
    bubble_pct: float | None
    exposed_comm_pct: float | None


def time_split(point: Point) -> list[TimeSplit]:
    """Per-rank compute/comm/idle fractions; empty when the run was not profiled."""
    splits = []
    for r in sorted(point.ranks, key=lambda r: r.rank):
        if r.compute_s is None or r.comm_s is None or r.idle_s is None:
            continue
        total = r.compute_s + r.comm_s + r.idle_s
        if total <= 0:
            continue
        splits.append(
            TimeSplit(r.rank, r.compute_s / total, r.comm_s / total, r.idle_s / total, r.bubble_pct, r.exposed_comm_pct)
        )
    return splits


# --- correctness -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PromptCheck:
    """One prompt's greedy ids against the baseline's."""

    index: int
    prompt: str
    exact: bool
    first_divergence: int | None
    """Index of the first differing generated token; None when identical."""
    baseline_token: int | None
    candidate_token: int | None
    topk_agree: bool | None
    """Each side's token within the other's top-k at the first divergence; False when one side has
    no token there (it ended earlier); None when identical or when a side recorded no top-k ids."""
    baseline_text: str = ""
    candidate_text: str = ""
    baseline_tail: tuple[int, ...] = ()
    """Up to TAIL_IDS ids from the first divergence on, each side."""
    candidate_tail: tuple[int, ...] = ()


@dataclass(frozen=True)
class Correctness:
    """A whole prompt set compared: the rate, and whether every divergence stayed within top-k."""

    checks: tuple[PromptCheck, ...]

    @property
    def n(self) -> int:
        return len(self.checks)

    @property
    def exact_matches(self) -> int:
        return sum(c.exact for c in self.checks)

    @property
    def exact_match_rate(self) -> float:
        return self.exact_matches / self.n if self.n else 0.0

    @property
    def divergences(self) -> list[PromptCheck]:
        return [c for c in self.checks if not c.exact]

    @property
    def all_divergences_topk(self) -> bool:
        """True when every divergence keeps top-k agreement (vacuously when there are none)."""
        return all(c.topk_agree for c in self.divergences)


TAIL_IDS = 4


def check_prompt(baseline: Mapping[str, Any], candidate: Mapping[str, Any]) -> PromptCheck:
    """Compare one completion line with the baseline's (worker/correctness.py is the rule, shared with
    `dinf-worker compare`)."""
    check = check_completion(baseline, candidate)
    index = int(baseline.get("index", 0))
    prompt = str(baseline.get("prompt", ""))
    texts = str(baseline.get("text", "")), str(candidate.get("text", ""))
    if check["exact"]:
        return PromptCheck(index, prompt, True, None, None, None, None, *texts)
    first = check["first_divergence"]
    a, b = list(baseline.get("output_ids") or []), list(candidate.get("output_ids") or [])
    return PromptCheck(index, prompt, False, first, check["baseline_token"], check["run_token"], check["topk_agree"],
                       *texts, tuple(a[first:first + TAIL_IDS]), tuple(b[first:first + TAIL_IDS]))


def compare_completions(
    baseline: Iterable[Mapping[str, Any]], candidate: Iterable[Mapping[str, Any]]
) -> Correctness:
    """Pair completions by request index and check each; a missing candidate line counts as divergent
    at token 0 (the request produced nothing to compare)."""
    by_index = {int(c.get("index", 0)): c for c in candidate}
    checks = []
    for line in sorted(baseline, key=lambda c: int(c.get("index", 0))):
        other = by_index.get(int(line.get("index", 0)))
        if other is None:
            checks.append(PromptCheck(int(line.get("index", 0)), str(line.get("prompt", "")),
                                      False, 0, None, None, False, str(line.get("text", "")), ""))
        else:
            checks.append(check_prompt(line, other))
    return Correctness(tuple(checks))


@dataclass(frozen=True)
class CorrectnessVerdict:
    passed: bool
    reason: str


def correctness_verdict(mode: Correctness, floor: Correctness | None) -> CorrectnessVerdict:
    """The pass rule: every divergence keeps top-k agreement and the exact-match rate is not below
    the noise floor (the 1-GPU baseline re-run with the batch split as the mode splits it).

    Without a floor only identical ids pass: that is the right demand on CPU in fp32.
    """
    bad = [c for c in mode.divergences if not c.topk_agree]
    rate = f"{mode.exact_matches}/{mode.n} exact ({mode.exact_match_rate:.0%})"
    if bad:
        which = ", ".join(str(c.index) for c in bad)
        subject = f"prompts {which} diverge" if len(bad) > 1 else f"prompt {which} diverges"
        return CorrectnessVerdict(False, f"{rate}; {subject} outside the top-k")
    if floor is None:
        if mode.exact_matches == mode.n:
            return CorrectnessVerdict(True, f"{rate}; no noise floor measured, identical ids required")
        return CorrectnessVerdict(False, f"{rate}; no noise floor measured, so any divergence fails")
    floor_text = f"noise floor {floor.exact_matches}/{floor.n} ({floor.exact_match_rate:.0%})"
    if mode.exact_match_rate + 1e-12 < floor.exact_match_rate:
        return CorrectnessVerdict(False, f"{rate} is below the {floor_text}; divergences stay within top-k")
    return CorrectnessVerdict(True, f"{rate}, not below the {floor_text}; every divergence within top-k")


# --- diff-only tables --------------------------------------------------------------------------


def flatten(record: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings to dotted keys; lists stay whole values (batch_sizes [1, 8] is one field)."""
    flat: dict[str, Any] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def diff_fields(records: Sequence[Mapping[str, Any]], *, ignore: Iterable[str] = ()) -> list[tuple[str, list[Any]]]:
    """Only the fields whose values differ between the records: [(field, [value per record])].

    A field absent from a record counts as None, so a field only some records have is a difference.
    """
    flats = [flatten(r) for r in records]
    skip = set(ignore)
    names = sorted({k for f in flats for k in f} - skip)
    rows = []
    for name in names:
        values = [f.get(name) for f in flats]
        if any(v != values[0] for v in values[1:]):
            rows.append((name, values))
    return rows
