"""`dinf tag`, `dinf note`, `dinf runs --tag`, the latency statistics of `dinf show`, and `dinf export`'s
columns and formats (CSV, JSON, Parquet), through the real `dinf` console script."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import pytest

from tests.cli.conftest import FIXTURE_BUNDLE
from tui.cli.main import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_NOT_FOUND, EXIT_OK
from tui.core.export import COLUMN_NAMES
from worker import contract

LATENCIES = {"ttft_s": "ttft", "tpot_s": "tpot", "itl_s": "itl", "e2e_s": "e2e", "prefill_latency_s": "prefill"}


def bundle_copy(tmp_path: Path, name: str, *, full_stats: bool = False) -> Path:
    """The pp2 fixture under another run name (another digest: another run). With `full_stats`, as
    today's worker writes it: every Stat from `stat_summary` (p99, std, min, max too), three
    repeats with their per-repeat output rates."""
    copy = tmp_path / name
    shutil.copytree(FIXTURE_BUNDLE, copy)
    result = json.loads((copy / contract.RESULT_FILE).read_text())
    result["run_name"] = name
    if full_stats:
        for m in result["measurements"]:
            scale = m["batch_size"]
            for offset, field in enumerate(LATENCIES):
                m[field] = contract.stat_summary([scale * (0.01 + 0.001 * offset) * k for k in (1, 2, 3, 4, 10)])
            m["repeats"], m["wall_s"] = 3, [4.0, 5.0, 6.0]
            m["raw"] = {"output_throughput_tok_s": [30.0, 40.0, 50.0]}
    (copy / contract.RESULT_FILE).write_text(json.dumps(result))
    return copy


def ingest(dinf, bundle: Path) -> int:
    done = dinf("ingest", str(bundle), "--json")
    assert done.code == EXIT_OK, done.err
    return done.json()["run_id"]


def test_tags_and_notes_are_set_shown_and_filtered(dinf, tmp_path):
    a = ingest(dinf, bundle_copy(tmp_path, "run-a"))
    b = ingest(dinf, bundle_copy(tmp_path, "run-b"))
    assert dinf("tag", str(a), "+h200", "fp16", "-absent").out == f"{a}\tfp16,h200\n"
    assert dinf("tag", str(b), "h200", "[/x]").out == f"{b}\t[/x],h200\n"
    assert dinf("tag", str(b), "-[/x]", "--json").json() == {"id": b, "uid": dinf("show", str(b), "--json").json()["uid"],
                                                            "tags": ["h200"]}
    assert dinf("tag", str(a)).out == f"{a}\tfp16,h200\n"  # no edits: print them

    def listed(*tags: str) -> list[int]:
        args = [arg for tag in tags for arg in ("--tag", tag)]
        done = dinf("runs", "--no-refresh", "--json", *args)
        assert done.code == EXIT_OK, done.err
        return [r["id"] for r in done.json()]

    assert listed("h200") == [a, b]
    assert listed("h200", "fp16") == [a]  # every tag must match
    assert listed("nowhere") == []
    table = dinf("runs", "--no-refresh").out.splitlines()
    assert table[0].split()[-1] == "TAGS"
    assert table[1].endswith("fp16,h200") and table[2].endswith("h200")
    assert [line.split()[0] for line in dinf("runs", "--no-refresh", "--match", "^fp16$").out.splitlines()[1:]] == [str(a)]

    note = "slow node gpu-7\n[bold red]not markup[/] \x1b[31m"
    assert dinf("note", str(a), note).code == EXIT_OK
    assert dinf("note", str(a)).out == "slow node gpu-7\n[bold red]not markup[/] \ufffd[31m\n"  # control shown
    shown = dinf("show", str(a))
    assert "  tags       fp16, h200\n" in shown.out
    assert "  note       slow node gpu-7\n             [bold red]not markup[/] \ufffd[31m\n" in shown.out
    assert "\x1b" not in shown.out
    as_json = dinf("show", str(a), "--json").json()
    assert (as_json["tags"], as_json["notes"]) == (["fp16", "h200"], note.rstrip())
    assert dinf("note", str(a), "--clear").code == EXIT_OK
    assert dinf("show", str(a), "--json").json()["notes"] == "" and "  note" not in dinf("show", str(a)).out


def test_bad_tags_are_bad_input_and_change_nothing(dinf, tmp_path):
    a = ingest(dinf, bundle_copy(tmp_path, "run-a"))
    dinf("tag", str(a), "keep")
    for words, why in ((["+ok", "two words"], "tag 'two words': no whitespace"),
                       (["+x", "-x"], "tag 'x': both added and removed"),
                       (["a,b"], "no commas"), (["x" * 33], "at most 32"), (["bell\x07"], "tag 'bell\\x07': control")):
        done = dinf("tag", str(a), *words)
        assert done.code == EXIT_BAD_INPUT and why in done.err, (words, done.err)
    assert dinf("show", str(a), "--json").json()["tags"] == ["keep"]
    done = dinf("runs", "--no-refresh", "--tag", "two words")
    assert done.code == EXIT_BAD_INPUT and "no whitespace" in done.err
    assert dinf("tag", "999", "+x").code == EXIT_NOT_FOUND
    done = dinf("note", str(a), "x" * 4001)
    assert done.code == EXIT_BAD_INPUT and "note: 4001 characters, at most 4000" in done.err
    assert dinf("note", str(a), "text", "--clear").code == EXIT_BAD_INPUT


def test_show_and_export_give_every_latency_statistic_blank_where_a_bundle_had_none(dinf, tmp_path):
    new = ingest(dinf, bundle_copy(tmp_path, "new-worker", full_stats=True))
    old = ingest(dinf, bundle_copy(tmp_path, "old-worker"))
    result = json.loads((tmp_path / "new-worker" / contract.RESULT_FILE).read_text())
    ttft = result["measurements"][0]["ttft_s"]

    shown = dinf("show", str(new), "--json").json()["measurements"][0]
    for field, prefix in LATENCIES.items():
        for part in ("n", "median", "p90", "p99", "mean", "std", "min", "max", "ci95"):
            suffix = part if part == "n" else f"{part}_s"
            assert shown[f"{prefix}_{suffix}"] == result["measurements"][0][field][part], (field, part)
    def latency_table(run_id: int) -> list[list[str]]:
        lines = [line.split() for line in dinf("show", str(run_id)).out.splitlines()]
        start = lines.index(["BATCH", "METRIC", "N", "MEDIAN", "P90", "P99", "MEAN", "±95%", "STD", "MIN", "MAX"])
        return lines[start + 1: start + 11]

    # ttft at batch 1: 10, 20, 30, 40, 100 ms; p90 76, p99 97.6; std 35.4; t(4) 2.776 x 35.4 / sqrt(5) = 43.9
    assert latency_table(new)[0] == ["1", "TTFT", "5", "30", "76", "97.6", "40", "43.9", "35.4", "10", "100"]
    assert [row[1] for row in latency_table(new)] == ["TTFT", "TPOT", "ITL", "E2E", "PREFILL"] * 2
    # never a zero for what the old worker did not record
    assert latency_table(old)[0] == ["1", "TTFT", "2", "55", "59", "-", "55", "9.8", "-", "-", "-"]

    rows = {(r["run_id"], r["batch_size"]): r for r in csv.DictReader(io.StringIO(dinf("export").out))}
    exported = rows[(str(new), "1")]
    assert float(exported["ttft_p99_s"]) == ttft["p99"] and float(exported["ttft_std_s"]) == ttft["std"]
    assert float(exported["ttft_min_s"]) == ttft["min"] and float(exported["prefill_max_s"]) > 0
    blank = rows[(str(old), "1")]
    assert [blank[f"{prefix}_{part}_s"] for prefix in LATENCIES.values() for part in ("p99", "std", "min", "max")] == (
        [""] * 20)
    assert blank["ttft_median_s"] == "0.055"
    as_json = {(r["run_id"], r["batch_size"]): r for r in json.loads(dinf("export", "--format", "json").out)}
    assert as_json[(old, 1)]["ttft_p99_s"] is None and as_json[(new, 1)]["ttft_p99_s"] == ttft["p99"]


def test_export_columns_layout_engine_memory_and_repeat_intervals(dinf, tmp_path):
    new = ingest(dinf, bundle_copy(tmp_path, "new-worker", full_stats=True))
    old = ingest(dinf, bundle_copy(tmp_path, "old-worker"))
    dinf("tag", str(new), "+h200", "+fp16")
    dinf("note", str(new), "two\nlines, with a comma")
    text = dinf("export", "--tag", "h200").out
    assert text.splitlines()[0].split(",") == list(COLUMN_NAMES)
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [(r["run_id"], r["batch_size"]) for r in rows] == [(str(new), "1"), (str(new), "2")]
    row = rows[0]
    # both ranks of the fixture ran on node1 (an imported bundle records no resources: from its ranks' hosts)
    assert {k: row[k] for k in ("tags", "notes", "nodes", "ranks_per_node", "num_ranks", "num_gpus", "dtype",
                                "engine_impl", "engine_compiled", "engine_cuda_graphs", "quant_scheme")} == {
        "tags": "fp16,h200", "notes": "two\nlines, with a comma", "nodes": "1", "ranks_per_node": "2",
        "num_ranks": "2", "num_gpus": "2", "dtype": "float32", "engine_impl": "reference",
        "engine_compiled": "False", "engine_cuda_graphs": "False", "quant_scheme": "none"}
    # the largest rank's peak: the fixture's ranks hold 300000000 and 300000001 bytes of RSS, no device memory
    assert (row["peak_rss_bytes"], row["peak_allocated_bytes"], row["peak_reserved_bytes"]) == ("300000001", "", "")
    # 3 repeats of 4, 5, 6 s: std 1, Student t(2) = 4.303, 4.303 / sqrt(3) = 2.484 (a normal 1.96 says 1.132)
    assert (row["wall_median_s"], row["wall_min_s"], row["wall_max_s"], row["wall_std_s"]) == ("5.0", "4.0", "6.0", "1.0")
    assert float(row["wall_ci95_s"]) == pytest.approx(2.4843, abs=1e-4)
    assert float(row["output_throughput_ci95_tok_s"]) == pytest.approx(24.843, abs=1e-3)
    assert row["output_throughput_tok_s"] == "38.1"  # the worker's median over repeats, as written
    old_row = next(r for r in csv.DictReader(io.StringIO(dinf("export", "--run", str(old)).out)))
    # 2 repeats of 0.2, 0.22 s: t(1) = 12.706; the old bundle kept no per-repeat rates: blank
    assert float(old_row["wall_ci95_s"]) == pytest.approx(12.706 * 0.02 / 2**0.5 / 2**0.5)
    assert old_row["output_throughput_ci95_tok_s"] == "" and old_row["tags"] == "" and old_row["notes"] == ""


def test_json_export_is_json_and_parquet_reads_back_as_the_csv(dinf, tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    ingest(dinf, bundle_copy(tmp_path, "new-worker", full_stats=True))
    ingest(dinf, bundle_copy(tmp_path, "old-worker"))
    as_json = json.loads(dinf("export", "--format", "json").out)
    assert [list(r) for r in as_json] == [list(COLUMN_NAMES)] * 4

    out = tmp_path / "m.parquet"
    done = dinf("export", "--format", "parquet", "-o", str(out))
    assert done.code == EXIT_OK and f"wrote 4 rows to {out}" in done.err and done.out == ""
    table = pq.read_table(out)
    assert table.column_names == list(COLUMN_NAMES)
    types = dict(zip(table.column_names, table.schema.types))
    assert (types["batch_size"], types["ttft_p99_s"], types["engine_compiled"], types["run_name"]) == (
        pa.int64(), pa.float64(), pa.bool_(), pa.string())
    assert types["peak_allocated_bytes"] == pa.int64()  # typed though no row has a value

    def as_csv_cell(value) -> str:
        return "" if value is None else str(value)

    from_parquet = [{k: as_csv_cell(v) for k, v in row.items()} for row in table.to_pylist()]
    assert from_parquet == list(csv.DictReader(io.StringIO(dinf("export").out)))


def test_parquet_without_pyarrow_says_how_to_get_it(dinf, tmp_path):
    ingest(dinf, bundle_copy(tmp_path, "run-a"))
    hidden = tmp_path / "no-pyarrow"
    hidden.mkdir()
    (hidden / "pyarrow.py").write_text("raise ImportError('No module named pyarrow (hidden by the test)')\n")
    dinf.env["PYTHONPATH"] = f"{hidden}:{dinf.env.get('PYTHONPATH', '')}"
    out = tmp_path / "m.parquet"
    done = dinf("export", "--format", "parquet", "-o", str(out))
    assert done.code == EXIT_FAILED
    assert "--format parquet needs pyarrow" in done.err and "pip install 'dinf-tui[parquet]'" in done.err
    assert "Traceback" not in done.err and not out.exists()
    done = dinf("export", "--format", "parquet")
    assert done.code == EXIT_BAD_INPUT and "give it one with -o FILE.parquet" in done.err
    assert dinf("export", "--format", "csv").code == EXIT_OK  # the other formats need nothing more
