"""The `eoaudit` command. It parses options and calls the library; nothing else.

Exit codes: 0 when every error gate passes, 1 when one fails, 2 on a usage or
input error (with one line on stderr and no output files written).
"""

from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path
from typing import Any

import click

from eoaudit import __version__
from eoaudit.config import find_config, load_config
from eoaudit.engine import DEFAULT_CHUNK_SIZE, AuditOptions, run_audit
from eoaudit.errors import EoauditError
from eoaudit.gates import write_junit
from eoaudit.output import REPORT, read_results, write_atomic, write_outputs
from eoaudit.readers import FORMATS, ReadOptions
from eoaudit.readers._common import parse_time_regex
from eoaudit.report import render_report
from eoaudit.ruleset import load_rules
from eoaudit.samples import SampleSet
from eoaudit.sources import FrameSource, SampleSource, open_source
from eoaudit.spill import DUCKDB_MEMORY

EXIT_GATE_FAILED = 1
EXIT_INPUT_ERROR = 2


class InputProblem(click.ClickException):
    """An eoaudit error shown as one line, with exit code 2."""

    exit_code = EXIT_INPUT_ERROR


def _comma_list(
    _ctx: click.Context, _param: click.Parameter, value: str | None
) -> list[str] | None:
    if value is None:
        return None
    names = [v.strip() for v in value.split(",") if v.strip()]
    return names or None


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="eoaudit")
@click.option(
    "--config",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Option defaults file. [default: ./eoaudit.toml, else [tool.eoaudit] in ./pyproject.toml]",
)
@click.pass_context
def main(ctx: click.Context, config: Path | None) -> None:
    """Audit Earth-observation image-caption datasets before release."""
    path = config or find_config(Path.cwd())
    if path is None:
        return
    if not path.is_file():
        raise InputProblem(f"--config {path}: file not found")
    allowed = {
        option.opts[0].lstrip("-").replace("-", "_"): option.name
        for option in run.params
        if option.name and option.opts[0].startswith("--")
    }
    try:
        ctx.default_map = {"run": load_config(path, allowed)}
    except EoauditError as error:
        raise InputProblem(str(error)) from None


@main.command()
@click.option(
    "--dataset",
    required=True,
    type=click.Path(path_type=Path),
    help="Dataset file or folder to audit.",
)
@click.option(
    "--format",
    "format_name",
    type=click.Choice(FORMATS),
    default="auto",
    show_default=True,
    help="Dataset format; auto detects it from the path and columns.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("eoaudit-report"),
    show_default=True,
    help="Output folder for report.html, results.json and samples.parquet.",
)
@click.option(
    "--metadata",
    type=click.Path(dir_okay=False, path_type=Path),
    help="SSL4EO-S12 v1.1 metadata GeoParquet with footprints and times (llama3-ssl4eo).",
)
@click.option(
    "--images",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder with S2L2A/ and/or S2RGB/ SSL4EO-S12 v1.1 Zarr Zip files (llama3-ssl4eo).",
)
@click.option(
    "--captions",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Captions table of a geotiff-dir dataset. [default: captions.csv/.parquet/.jsonl inside]",
)
@click.option("--caption-column", help="Caption column. [default: detected: caption, text, ...]")
@click.option(
    "--id-column", help="Unique sample id column. [default: sample_id or id, else row number]"
)
@click.option("--lat-column", help="Latitude column, degrees. [default: lat, latitude, ...]")
@click.option("--lon-column", help="Longitude column, degrees. [default: lon, longitude, ...]")
@click.option("--geohash-column", help="Geohash column. [default: geohash]")
@click.option("--geometry-column", help="WKT footprint column. [default: geometry, wkt, footprint]")
@click.option("--time-column", help="Acquisition time column. [default: time, datetime, date, ...]")
@click.option("--image-column", help="Image path column. [default: image, image_path, ...]")
@click.option(
    "--dayfirst",
    is_flag=True,
    default=False,
    help="Read dates such as 03/04/2021 day first; otherwise only ISO 8601 is accepted.",
)
@click.option(
    "--time-regex",
    metavar="COLUMN=REGEX",
    help="Take the acquisition date from COLUMN with REGEX; its first group is an ISO date.",
)
@click.option(
    "--encoding", default="utf-8", show_default=True, help="Text encoding of CSV/JSON files."
)
@click.option(
    "--on-bad-rows",
    type=click.Choice(["skip", "error"]),
    default="skip",
    show_default=True,
    help="skip: leave unreadable rows out and count them in findings; error: stop at the first.",
)
@click.option(
    "--analyzers",
    callback=_comma_list,
    metavar="A,B",
    help="Analyzers to run, comma-separated. [default: all; see `eoaudit analyzers`]",
)
@click.option(
    "--gates",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Gates file. [default: the packaged rules/gates.yaml]",
)
@click.option(
    "--rules",
    "rules_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder of rule YAML files that replace the packaged ones of the same name.",
)
@click.option(
    "--junit",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the gate outcomes as JUnit XML to this file.",
)
@click.option(
    "--chunk-size",
    type=click.IntRange(min=1),
    default=DEFAULT_CHUNK_SIZE,
    show_default=True,
    help="Samples per analyzer chunk; bounds memory per step.",
)
@click.option(
    "--sample",
    "sample_size",
    type=click.IntRange(min=1),
    help="Audit a random subset of this many samples. [default: all samples]",
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Random seed of the --sample subset."
)
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for caches kept between runs. [default: OUT/.cache]",
)
@click.option(
    "--worldcover",
    metavar="SOURCE",
    help="ESA WorldCover tiles for the hallucination analyzer: a folder of official tiles, "
    "a GDAL VRT, or a URL template with {version}, {year} and {tile}.",
)
@click.option(
    "--worldcover-version",
    type=click.Choice(["2021", "2020"]),
    default="2021",
    show_default=True,
    help="WorldCover release: 2021 (v200) or 2020 (v100).",
)
@click.option(
    "--gsd",
    "gsd_m",
    type=click.FloatRange(min=0, min_open=True),
    help="Ground sampling distance of the images in metres, for unsupported-claim checks. "
    "[default: 10, from rules/vocabulary.yaml]",
)
@click.option("--clip-model", help="OpenCLIP architecture name, e.g. ViT-B-16 (alignment).")
@click.option(
    "--clip-checkpoint",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Local OpenCLIP checkpoint file for --clip-model (alignment).",
)
@click.option(
    "--clip-hf-folder",
    type=click.Path(file_okay=False, path_type=Path),
    help="Local folder of a Hugging Face transformers CLIP model (alignment).",
)
@click.option(
    "--clip-multispectral-checkpoint",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Local Llama3-MS-CLIP-style checkpoint: ViT-B-16 on 10 Sentinel-2 L2A bands (alignment).",
)
@click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda"]),
    default="auto",
    show_default=True,
    help="Device for CLIP; auto takes a CUDA GPU when there is one.",
)
@click.option(
    "--precision",
    type=click.Choice(["auto", "fp32", "bf16", "fp16"]),
    default="auto",
    show_default=True,
    help="CLIP arithmetic; auto is bf16 or fp16 on a GPU and fp32 on the CPU.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    help="Images per CLIP batch. [default: from rules/alignment.yaml]",
)
@click.option(
    "--loader-workers",
    type=click.IntRange(min=0),
    help=(
        "DataLoader processes decoding images for CLIP. "
        "[default: CPU cores - 1, at most 4 on the CPU and 16 on a GPU]"
    ),
)
@click.option(
    "--sentence-scoring",
    is_flag=True,
    help="Score long captions sentence by sentence (mean) instead of truncating them.",
)
@click.option(
    "--scheduler",
    default="local",
    show_default=True,
    metavar="local|processes|ADDRESS",
    help="Where partitions run: this process, a local pool of worker processes, "
    "or a running Dask scheduler such as tcp://host:8786.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    help="Worker processes for --scheduler processes. [default: one per CPU core]",
)
@click.option(
    "--finalize-memory",
    default=DUCKDB_MEMORY,
    show_default=True,
    metavar="SIZE",
    help="Memory for the queries over all samples at the end of a run (duplicate search, "
    "CLIP score percentiles), such as 512MB; beyond it they spill to the cache folder.",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Continue an interrupted run from its finished partitions in the cache folder.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@click.option("--verbose", "-v", is_flag=True, help="Log each step to stderr.")
def run(**options: Any) -> None:
    """Audit a dataset and write report.html, results.json and samples.parquet.

    Exit code 0 when all error gates pass, 1 when one fails, 2 on a usage or
    input error.
    """
    _configure_logging(options["verbose"])
    out_existed = options["out"].exists()
    try:
        read_options = _read_options(options)
        audit_options = AuditOptions(
            analyzers=options["analyzers"],
            gates=options["gates"],
            rules_dir=options["rules_dir"],
            chunk_size=options["chunk_size"],
            sample=options["sample_size"],
            seed=options["seed"],
            progress=not options["quiet"],
            cache_dir=options["cache_dir"] or options["out"] / ".cache",
            analyzer_options=_analyzer_options(options),
            scheduler=options["scheduler"],
            workers=options["workers"],
            resume=options["resume"],
            finalize_memory=options["finalize_memory"],
        )
        source = open_source(
            options["dataset"],
            read_options,
            audit_options.chunk_size,
            lazy=options["sample_size"] is None,
        )
        audit = run_audit(
            source if options["sample_size"] is None else source_samples(source),
            audit_options,
        )
        html = render_report(audit.result, load_rules(options["rules_dir"]))
        paths = write_outputs(
            audit.result, audit.sample_files, html, options["out"], audit.final_files
        )
        audit.discard_cache()
        if options["junit"]:
            write_junit(audit.result.gates, options["junit"])
    except EoauditError as error:
        if not out_existed and options["out"].is_dir():
            # Only the run cache can be in a folder this run created.
            shutil.rmtree(options["out"], ignore_errors=True)
        raise InputProblem(str(error)) from None

    _print_summary(audit.result.gates, paths["report"])
    if not audit.result.passed:
        sys.exit(EXIT_GATE_FAILED)


@main.command()
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--rules",
    "rules_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder of rule YAML files that replace the packaged ones (report size caps).",
)
def report(out_dir: Path, rules_dir: Path | None) -> None:
    """Render OUT_DIR/report.html again from the results.json saved there."""
    try:
        result = read_results(out_dir)
        html = render_report(result, load_rules(rules_dir))
        write_atomic(out_dir / REPORT, html.encode("utf-8"))
    except EoauditError as error:
        raise InputProblem(str(error)) from None
    click.echo(f"Report: {out_dir / REPORT}")


@main.command("analyzers")
def list_analyzers() -> None:
    """List the analyzers and what each needs to run."""
    from eoaudit.analyzers import registered_analyzers

    for name, cls in registered_analyzers().items():
        needs = ", ".join(cls.requires) or "nothing"
        click.echo(f"{name:<14} {cls.title} (needs {needs})")


def source_samples(source: SampleSource) -> SampleSet:
    """Return the in-memory samples of a source opened with `lazy=False`."""
    assert isinstance(source, FrameSource)
    return source.dataset


def _analyzer_options(options: dict[str, Any]) -> dict[str, Any]:
    """Collect the options meant for individual analyzers; unset ones are left out."""
    names = {
        "worldcover": "worldcover",
        "worldcover_version": "worldcover_version",
        "gsd_m": "gsd_m",
        "clip_model": "clip_model",
        "clip_checkpoint": "clip_checkpoint",
        "clip_hf_folder": "clip_hf_folder",
        "clip_multispectral_checkpoint": "clip_multispectral_checkpoint",
        "device": "device",
        "precision": "precision",
        "batch_size": "batch_size",
        "loader_workers": "decode_workers",
        "sentence_scoring": "sentence_scoring",
    }
    selected = {}
    for option, key in names.items():
        value = options.get(option)
        if value is not None and value is not False:
            selected[key] = str(value) if isinstance(value, Path) else value
    selected["progress"] = not options["quiet"]
    return selected


def _read_options(options: dict[str, Any]) -> ReadOptions:
    return ReadOptions(
        format=options["format_name"],
        caption_column=options["caption_column"],
        id_column=options["id_column"],
        lat_column=options["lat_column"],
        lon_column=options["lon_column"],
        geohash_column=options["geohash_column"],
        geometry_column=options["geometry_column"],
        time_column=options["time_column"],
        image_column=options["image_column"],
        dayfirst=options["dayfirst"],
        time_regex=parse_time_regex(options["time_regex"]) if options["time_regex"] else None,
        metadata=options["metadata"],
        images=options["images"],
        captions=options["captions"],
        encoding=options["encoding"],
        on_bad_rows=options["on_bad_rows"],
    )


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _print_summary(gates: list[Any], report_path: Path) -> None:
    failed = [g for g in gates if g.status == "fail"]
    for gate in failed:
        click.echo(f"{gate.severity}: gate {gate.message}", err=True)
    passed = sum(1 for g in gates if g.status == "pass")
    not_evaluated = len(gates) - passed - len(failed)
    click.echo(
        f"Gates passed: {passed} of {len(gates)} ({len(failed)} failed, "
        f"{not_evaluated} not evaluated)"
    )
    click.echo(f"Report: {report_path}")
