"""Exact and near-duplicate captions over the whole audit, out of core with DuckDB.

The vocabulary analyzer spills one row per caption (:mod:`eoaudit.spill`):
`sample_seq`, `sample_id`, the normalised text `key` (0 for a caption
without words), `band_0` ... `band_<B-1>` MinHash band hashes (0 without
words), a `location` key (0 when unknown) and a `snippet` of the caption.
:func:`find_duplicates` groups, joins and sorts these rows in DuckDB, which
spills to disk past its memory limit, so the search needs no per-caption
memory in Python.

- Exact duplicates: equal keys. A caption is flagged when an earlier one
  has its key.
- Near duplicates: captions that share any band hash are linked, and a
  cluster is a connected component of that graph. Components come from
  label propagation: every caption takes the smallest `sample_seq` among
  itself and its neighbours, and a label's own label ("pointer jumping"),
  until nothing changes. The final label is the component's first caption.

Clusters of both kinds have at least two captions and are numbered 0, 1 ...
in the order of their first caption.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from eoaudit.spill import SEQ, parquet_list

logger = logging.getLogger(__name__)

TABLE_COLUMNS = ["kind", "cluster", "captions", "locations", "first_sample", "examples", "text"]


@dataclass
class DuplicateSummary:
    """Counts, examples and largest clusters from :func:`find_duplicates`.

    Attributes:
        captions: Captions searched.
        exact: Captions equal to an earlier caption.
        exact_examples: The first of those sample ids, in dataset order.
        exact_clusters: Clusters of equal captions.
        near_members: Captions in a near-duplicate cluster.
        near_clusters: Near-duplicate clusters.
        shared_captions: Captions in exact clusters that span two or more locations.
        shared_clusters: Exact clusters that span two or more locations.
        shared_examples: The first sample of the first such clusters.
        table: The largest clusters of each kind and the largest clusters
            spanning locations, with the columns of :data:`TABLE_COLUMNS`.
        rounds: Label-propagation rounds the near-duplicate components took.
    """

    captions: int
    exact: int
    exact_examples: list[str]
    exact_clusters: int
    near_members: int
    near_clusters: int
    shared_captions: int
    shared_clusters: int
    shared_examples: list[str]
    table: pd.DataFrame
    rounds: int


def open_spilled(db: Any, files: list[Path]) -> None:
    """Make the spilled rows in `files` (in dataset order) the view `spilled`."""
    db.execute(
        f"CREATE OR REPLACE TEMP VIEW spilled AS SELECT * FROM "
        f"read_parquet({parquet_list(files)}, union_by_name = true)"
    )


def find_duplicates(
    db: Any,
    bands: int,
    keep: int,
    examples: int,
    columns_file: Path,
    prefix: str,
) -> DuplicateSummary:
    """Search the spilled rows for exact and near-duplicate captions.

    Args:
        db: A DuckDB connection from :func:`eoaudit.spill.connect` on which
            :func:`open_spilled` has run.
        bands: MinHash bands per row.
        keep: Clusters of each kind to list in the table.
        examples: Sample ids to list per cluster and per finding.
        columns_file: Where to write the per-sample columns
            `<prefix>exact_duplicate` and `<prefix>near_duplicate_cluster`,
            with `sample_id`, in dataset order.
        prefix: Column name prefix, e.g. `vocabulary.`.
    """
    captions = _scalar(db, "SELECT count(*) FROM spilled")
    _exact_groups(db)
    rounds = _near_components(db, bands)
    _write_columns(db, columns_file, prefix)
    _cluster_rows(db)

    exact = _scalar(db, "SELECT coalesce(sum(captions - 1), 0) FROM exact_groups")
    exact_examples = _column(
        db,
        f"SELECT s.sample_id FROM spilled s JOIN exact_groups g USING (key) "
        f"WHERE s.{SEQ} > g.first_seq ORDER BY s.{SEQ} LIMIT {examples}",
    )
    near_members = _scalar(db, "SELECT count(*) FROM near_members")
    near_clusters = _scalar(db, "SELECT count(*) FROM clusters WHERE kind = 'near'")
    exact_clusters = _scalar(db, "SELECT count(*) FROM clusters WHERE kind = 'exact'")
    shared = "FROM clusters WHERE kind = 'exact' AND locations >= 2"
    shared_captions = _scalar(db, f"SELECT coalesce(sum(captions), 0) {shared}")
    shared_clusters = _scalar(db, f"SELECT count(*) {shared}")
    first_shared = db.execute(
        f"SELECT kind, cluster, captions, locations {shared} ORDER BY cluster LIMIT {examples}"
    ).fetchdf()
    shared_examples = _describe(db, first_shared, examples)["first_sample"].tolist()
    return DuplicateSummary(
        captions=captions,
        exact=exact,
        exact_examples=exact_examples,
        exact_clusters=exact_clusters,
        near_members=near_members,
        near_clusters=near_clusters,
        shared_captions=shared_captions,
        shared_clusters=shared_clusters,
        shared_examples=shared_examples,
        table=_largest(db, keep, examples),
        rounds=rounds,
    )


def _scalar(db: Any, query: str) -> int:
    return int(db.execute(query).fetchone()[0])


def _column(db: Any, query: str) -> list[str]:
    return [str(row[0]) for row in db.execute(query).fetchall()]


def _exact_groups(db: Any) -> None:
    """Create `exact_groups`: keys of two or more captions, their first caption and cluster."""
    db.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE exact_groups AS
        SELECT key, first_seq, captions,
               row_number() OVER (ORDER BY first_seq) - 1 AS cluster
        FROM (
            SELECT key, min({SEQ}) AS first_seq, count(*) AS captions
            FROM spilled WHERE key != 0
            GROUP BY key HAVING count(*) >= 2
        )
        """
    )


def _near_components(db: Any, bands: int) -> int:
    """Build `near_members` (sample_seq, cluster); return the propagation rounds."""
    # One scan with UNPIVOT. A UNION ALL of one scan per band read the spill
    # eight times at once, outside DuckDB's memory limit (benchmarks/duplicates.md).
    columns = ", ".join(f"band_{band}" for band in range(bands))
    band_rows = (
        f"SELECT {SEQ} AS node, band, hash FROM (UNPIVOT (SELECT {SEQ}, {columns} FROM spilled "
        f"WHERE band_0 != 0) ON {columns} INTO NAME band VALUE hash)"
    )
    db.execute(f"CREATE OR REPLACE TEMP TABLE band_rows AS {band_rows}")

    # Link each caption to the first caption that shares one of its band hashes.
    db.execute(
        """
        CREATE OR REPLACE TEMP TABLE edges AS
        SELECT DISTINCT b.node, r.root
        FROM band_rows b
        JOIN (
            SELECT band, hash, min(node) AS root FROM band_rows
            GROUP BY band, hash HAVING count(*) >= 2
        ) r USING (band, hash)
        WHERE b.node != r.root
        """
    )
    db.execute("DROP TABLE band_rows")

    db.execute(
        """
        CREATE OR REPLACE TEMP TABLE labels AS
        SELECT node, min(label) AS label FROM (
            SELECT node, root AS label FROM edges
            UNION ALL SELECT root AS node, root AS label FROM edges
        ) GROUP BY node
        """
    )

    rounds = 0
    while True:
        rounds += 1
        db.execute(
            """
            CREATE OR REPLACE TEMP TABLE relabelled AS
            SELECT node, min(label) AS label FROM (
                SELECT node, label FROM labels
                UNION ALL SELECT e.node, l.label FROM edges e JOIN labels l ON l.node = e.root
                UNION ALL SELECT e.root, l.label FROM edges e JOIN labels l ON l.node = e.node
                UNION ALL SELECT l.node, p.label FROM labels l JOIN labels p ON p.node = l.label
            ) GROUP BY node
            """
        )
        changed = _scalar(
            db,
            "SELECT count(*) FROM relabelled r JOIN labels l USING (node) WHERE r.label != l.label",
        )
        db.execute("DROP TABLE labels")
        db.execute("ALTER TABLE relabelled RENAME TO labels")
        if not changed:
            break
    logger.debug("near-duplicate components settled after %d rounds", rounds)

    # The label is the component's first caption, so ordering labels numbers the clusters.
    db.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE near_members AS
        SELECT l.node AS {SEQ}, c.cluster
        FROM labels l JOIN (
            SELECT label, row_number() OVER (ORDER BY label) - 1 AS cluster
            FROM (SELECT DISTINCT label FROM labels)
        ) c USING (label)
        """
    )
    db.execute("DROP TABLE labels")
    db.execute("DROP TABLE edges")
    return rounds


def _write_columns(db: Any, target: Path, prefix: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    path = str(target).replace("'", "''")
    db.execute(
        f"""
        COPY (
            SELECT s.sample_id,
                   coalesce(s.{SEQ} > g.first_seq, false) AS "{prefix}exact_duplicate",
                   coalesce(n.cluster, -1) AS "{prefix}near_duplicate_cluster"
            FROM spilled s
            LEFT JOIN exact_groups g ON s.key = g.key
            LEFT JOIN near_members n ON n.{SEQ} = s.{SEQ}
            ORDER BY s.{SEQ}
        ) TO '{path}' (FORMAT parquet)
        """
    )


def _cluster_rows(db: Any) -> None:
    """Build `cluster_members` and `clusters`: size and locations of every cluster.

    Only fixed-size aggregates run over all clusters, because DuckDB can spill
    those to disk. The sample ids and texts are looked up for the few clusters
    that are reported (:func:`_describe`).
    """
    db.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE cluster_members AS
        SELECT 'exact' AS kind, g.cluster, s.{SEQ}, s.sample_id, s.location, s.snippet
        FROM spilled s JOIN exact_groups g USING (key)
        UNION ALL
        SELECT 'near' AS kind, n.cluster, s.{SEQ}, s.sample_id, s.location, s.snippet
        FROM spilled s JOIN near_members n USING ({SEQ})
        """
    )
    db.execute(
        """
        CREATE OR REPLACE TEMP TABLE clusters AS
        SELECT c.kind, c.cluster, c.captions, coalesce(l.locations, 0) AS locations
        FROM (
            SELECT kind, cluster, count(*) AS captions FROM cluster_members
            GROUP BY kind, cluster
        ) c
        LEFT JOIN (
            SELECT kind, cluster, count(*) AS locations FROM (
                SELECT DISTINCT kind, cluster, location FROM cluster_members
                WHERE location != 0
            ) GROUP BY kind, cluster
        ) l USING (kind, cluster)
        """
    )


def _describe(db: Any, selected: pd.DataFrame, examples: int) -> pd.DataFrame:
    """Add `first_sample`, `examples` and `text` to selected rows of `clusters`."""
    if selected.empty:
        return selected.assign(first_sample="", examples="", text="")
    keys = selected[["kind", "cluster"]].reset_index(drop=True)
    db.register("selected_clusters", keys)
    described = db.execute(
        f"""
        SELECT m.kind, m.cluster,
               arg_min(m.sample_id, m.{SEQ}) AS first_sample,
               array_to_string(min_by(m.sample_id, m.{SEQ}, {examples}), ', ') AS examples,
               arg_min(m.snippet, m.{SEQ}) AS text
        FROM cluster_members m JOIN selected_clusters USING (kind, cluster)
        GROUP BY m.kind, m.cluster
        """
    ).fetchdf()
    db.unregister("selected_clusters")
    described["cluster"] = described["cluster"].astype("int64")
    return selected.merge(described, on=["kind", "cluster"], how="left")


def _largest(db: Any, keep: int, examples: int) -> pd.DataFrame:
    """Return the `keep` largest clusters of each kind, then those spanning locations."""
    parts = [
        f"SELECT kind, cluster, captions, locations FROM clusters WHERE kind = '{kind}' "
        f"ORDER BY captions DESC, cluster LIMIT {keep}"
        for kind in ("exact", "near")
    ]
    parts.append(
        "SELECT kind, cluster, captions, locations FROM clusters WHERE locations >= 2 "
        f"ORDER BY captions DESC, kind, cluster LIMIT {keep}"
    )
    frames = [db.execute(query).fetchdf() for query in parts]
    table = pd.concat(frames, ignore_index=True).drop_duplicates(["kind", "cluster"])
    table = table.reset_index(drop=True).astype(
        {"cluster": "int64", "captions": "int64", "locations": "int64"}
    )
    return _describe(db, table, examples)[TABLE_COLUMNS]


def distinct_values(db: Any, column: str, missing: Any) -> int:
    """Return the number of distinct values of a spilled column, besides null and `missing`."""
    quoted = '"' + column.replace('"', '""') + '"'
    query = f"SELECT count(*) FROM (SELECT DISTINCT {quoted} FROM spilled WHERE {quoted} != ?)"
    return int(db.execute(query, [missing]).fetchone()[0])


__all__ = [
    "TABLE_COLUMNS",
    "DuplicateSummary",
    "distinct_values",
    "find_duplicates",
    "open_spilled",
]
