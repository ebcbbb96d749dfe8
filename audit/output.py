"""Writing and reading the output folder: report.html, results.json, samples.parquet.

Every file is first written under a temporary name in the same folder and then
renamed over the old one, so an interrupted run leaves no half-written file and
the previous report stays readable. All temporary files of a run are written
before the first rename.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import geopandas as gpd
import pyarrow as pa
import pyarrow.parquet as pq

from eoaudit.errors import InputError
from eoaudit.results import AuditResult
from eoaudit.spill import RowStream, aligned_columns

REPORT = "report.html"
RESULTS = "results.json"
SAMPLES = "samples.parquet"
FIGURES = "figures"


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


# mkstemp creates files readable by the owner only; outputs get the usual mode.
_FILE_MODE = 0o666 & ~_umask()


def write_atomic(path: Path, data: bytes) -> None:
    """Write bytes to `path` through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = _temporary_file(path, data)
    temporary.replace(path)


def _temporary_file(path: Path, data: bytes) -> Path:
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    Path(name).chmod(_FILE_MODE)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return Path(name)


def write_outputs(
    result: AuditResult,
    sample_files: list[Path],
    report_html: str,
    out_dir: Path,
    final_files: list[Path] | None = None,
) -> dict[str, Path]:
    """Write the report, the results and the per-sample table into `out_dir`.

    `final_files` are the per-sample columns computed in finalize
    (:attr:`eoaudit.engine.Audit.final_files`), joined onto the samples.

    Returns:
        The written paths by kind: `report`, `results`, `samples`.
    """
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    figures_dir = out_dir / FIGURES
    pending: list[tuple[Path, Path]] = []
    try:
        figures_dir.mkdir(exist_ok=True)
        for analyzer in result.analyzers.values():
            for key, figure in analyzer.figures.items():
                target = figures_dir / f"{key}.png"
                pending.append((_temporary_file(target, figure.png), target))

        results_json = json.dumps(result.to_dict(), indent=2, ensure_ascii=False)
        target = out_dir / RESULTS
        pending.append((_temporary_file(target, results_json.encode("utf-8")), target))

        target = out_dir / SAMPLES
        handle, name = tempfile.mkstemp(prefix=f".{SAMPLES}.", suffix=".tmp", dir=out_dir)
        os.close(handle)
        Path(name).chmod(_FILE_MODE)
        pending.append((Path(name), target))
        combine_sample_files(sample_files, Path(name), final_files)

        target = out_dir / REPORT
        pending.append((_temporary_file(target, report_html.encode("utf-8")), target))
    except BaseException:
        for temporary, _ in pending:
            temporary.unlink(missing_ok=True)
        if created:
            _remove_empty_tree(out_dir)
        raise

    for temporary, target in pending:
        temporary.replace(target)
    return {"report": out_dir / REPORT, "results": out_dir / RESULTS, "samples": out_dir / SAMPLES}


def combine_sample_files(
    files: list[Path], target: Path, final_files: list[Path] | None = None
) -> None:
    """Concatenate per-partition GeoParquet files into one, a partition at a time.

    The columns of `final_files` (see :mod:`eoaudit.spill`), whose rows follow
    the partitions' samples in order, are added to each partition.

    Column types are unified across partitions (a column that is all null in
    one partition takes the type it has in the others). The GeoParquet
    metadata of the first file is kept without its bounding box, which
    described that partition only.
    """
    final_files = final_files or []
    schemas = [pq.read_schema(file) for file in files]
    extra = [pq.read_schema(file).remove_metadata() for file in final_files]
    extra = [schema.remove(schema.get_field_index("sample_id")) for schema in extra]
    if extra and schemas:
        schemas = [
            pa.unify_schemas([schema, *extra]).with_metadata(schema.metadata) for schema in schemas
        ]
    if not schemas:
        gpd.GeoDataFrame({"sample_id": []}, geometry=[], crs="EPSG:4326").to_parquet(target)
        return
    unified = pa.unify_schemas(
        [schema.remove_metadata() for schema in schemas], promote_options="permissive"
    )
    metadata = dict(schemas[0].metadata or {})
    if b"geo" in metadata:
        geo = json.loads(metadata[b"geo"])
        for column in geo.get("columns", {}).values():
            column.pop("bbox", None)
        metadata[b"geo"] = json.dumps(geo).encode()
    unified = unified.with_metadata(metadata)
    streams = [RowStream(path) for path in final_files]
    with pq.ParquetWriter(target, unified) as writer:
        for file in files:
            table = pq.read_table(file)
            ids = table.column("sample_id").combine_chunks()
            for name, column in aligned_columns(streams, ids):
                table = table.append_column(name, column.cast(unified.field(name).type))
            for name in unified.names:
                if name not in table.column_names:
                    table = table.append_column(
                        name, pa.nulls(len(table), unified.field(name).type)
                    )
            writer.write_table(table.select(unified.names).cast(unified))


def _remove_empty_tree(folder: Path) -> None:
    for path in sorted(folder.rglob("*"), reverse=True):
        if path.is_dir():
            path.rmdir()
    folder.rmdir()


def read_results(out_dir: Path) -> AuditResult:
    """Load the results.json and figures that `eoaudit run` wrote into `out_dir`.

    Raises:
        InputError: When the folder has no results.json or it cannot be read.
    """
    path = out_dir / RESULTS
    if not path.is_file():
        raise InputError(f"{out_dir}: no {RESULTS} here; run `eoaudit run --out {out_dir}` first")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: not valid JSON ({error}); rerun eoaudit run") from None
    figures = {}
    figures_dir = out_dir / FIGURES
    if figures_dir.is_dir():
        figures = {p.stem: p.read_bytes() for p in figures_dir.glob("*.png")}
    try:
        return AuditResult.from_dict(data, figures)
    except (KeyError, TypeError, ValueError) as error:
        raise InputError(f"{path}: not a results file eoaudit can read ({error})") from None
