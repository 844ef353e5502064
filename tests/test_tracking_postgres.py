"""MLflow on a real database: PostgreSQL and an `mlflow server` on loopback; `pipeline prepare`, `baseline`,
`train`, `runs` and `promote --best` against it, then the champion loaded through `mlflow.pyfunc`."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from helpers import LABELS, Tiny, free_port, mlflow_server, write_jsonl

from pipeline.cli import main
from pipeline.scoring import load_scorer
from pipeline.tracking import resolve_model_uri

mlflow = pytest.importorskip("mlflow")
pytestmark = pytest.mark.slow  # a PostgreSQL cluster and an MLflow server: `make test-slow`, run by CI
psycopg2 = pytest.importorskip("psycopg2", reason="psycopg2 is not installed (pip install psycopg2-binary)")
MODEL = "pg-news-topics"
DB, DB_USER = "mlflow", "mlflow"
TRACKED = ("tracking.enabled=true", f"tracking.registered_model={MODEL}", "tracking.experiment=pg-news",
           "train.epochs=3")


def postgres_bindir() -> Path | None:
    """The folder holding initdb and pg_ctl: on PATH, else Debian's /usr/lib/postgresql/<version>/bin."""
    found = shutil.which("initdb")
    candidates = [Path(found).resolve().parent] if found else []
    candidates += [Path(d) for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]
    return next((d for d in candidates if (d / "initdb").is_file() and (d / "pg_ctl").is_file()), None)


def as_user() -> list[str]:
    """The prefix that runs PostgreSQL's tools unprivileged: none for a normal user, `runuser` under root."""
    if os.geteuid() != 0:
        return []
    runuser = shutil.which("runuser")
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            if runuser:
                return [runuser, "-u", name, "--"]
    pytest.skip("running as root, and neither runuser nor a 'postgres'/'nobody' user exists for initdb")


def _run(name: str, cmd: list[str], cwd: Path) -> None:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)
    if proc.returncode:
        raise RuntimeError(f"{name} failed: {(proc.stdout + proc.stderr)[-2000:]}")


def start_cluster(bindir: Path, prefix: list[str], root: Path, port: int) -> str:
    """initdb a cluster under `root`, start it on 127.0.0.1:`port` (socket in `root`), create the database."""
    data = root / "data"
    _run("initdb", [*prefix, str(bindir / "initdb"), "-D", str(data), "-U", DB_USER, "--auth=trust", "-E", "UTF8",
                    "--no-sync"], root)
    options = f"-k {root} -p {port} -c listen_addresses=127.0.0.1 -c fsync=off"
    _run("pg_ctl start", [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "postgres.log"),
                          "-w", "-t", "60", "-o", options, "start"], root)
    with contextlib.closing(psycopg2.connect(host="127.0.0.1", port=port, user=DB_USER, dbname="postgres")) as conn:
        conn.autocommit = True
        conn.cursor().execute(f"CREATE DATABASE {DB}")
    return f"postgresql://{DB_USER}@127.0.0.1:{port}/{DB}"


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    """A throwaway PostgreSQL cluster on loopback with an empty database; its URI. Stopped and removed after."""
    bindir = postgres_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL's initdb/pg_ctl are not installed (Debian: apt-get install postgresql)")
    prefix = as_user()
    # not under pytest's tmp dir: that one is private to root, and the cluster runs as another user
    root = Path(tempfile.mkdtemp(prefix="pg-"))
    if prefix:
        shutil.chown(root, user=prefix[2], group=pwd.getpwnam(prefix[2]).pw_gid)
    try:
        yield start_cluster(bindir, prefix, root, free_port())
    finally:
        subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(root / "data"), "-m", "fast", "-w", "stop"],
                       cwd=root, capture_output=True, timeout=60, check=False)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def server(postgres, tmp_path_factory) -> Iterator[str]:
    """An `mlflow server` whose backend store is the PostgreSQL database, through psycopg2.

    The driver is named: SQLAlchemy 2.1 maps a bare `postgresql://` to psycopg 3, 2.0 to psycopg2.
    """
    backend = postgres.replace("postgresql://", "postgresql+psycopg2://", 1)
    with mlflow_server(backend, tmp_path_factory.mktemp("pg-mlflow")) as uri:
        yield uri
    mlflow.set_tracking_uri(None)  # the pipeline's connect() exported it; later tests must not inherit a dead server


@pytest.fixture(scope="module")
def tracked(server, tmp_path_factory, corpus, tiny_bert) -> list[str]:
    """Command-line arguments of the tiny config tracked on the server, after prepare, baseline and train."""
    root = tmp_path_factory.mktemp("pg-tracked")
    args = Tiny(root, write_jsonl(root / "c.jsonl", corpus), tiny_bert).args(*TRACKED, f"tracking.uri={server}")
    for command in ("prepare", "baseline", "train"):
        assert main([command, *args]) == 0, command
    return args


def test_runs_are_rows_in_postgres(tracked, postgres):
    with contextlib.closing(psycopg2.connect(postgres)) as conn, conn.cursor() as cur:
        cur.execute("SELECT r.status, t.value FROM runs r JOIN experiments e ON r.experiment_id = e.experiment_id "
                    "JOIN tags t ON t.run_uuid = r.run_uuid AND t.key = 'kind' WHERE e.name = 'pg-news'")
        rows = cur.fetchall()
        cur.execute("SELECT count(*) FROM model_versions WHERE name = %s", (MODEL,))
        versions = cur.fetchone()[0]
    assert sorted(rows) == [("FINISHED", "baseline"), ("FINISHED", "train")]
    assert versions == 2


def test_runs_table_promote_best_and_serve_champion(tracked, server, corpus, capsys):
    assert main(["runs", *tracked, "--sort", "test_macro_f1"]) == 0
    table = capsys.readouterr().out.splitlines()
    header, rows = table[0].split(), [line.split() for line in table[1:]]
    assert header[:3] == ["run", "id", "kind"] and header[-4] == "test_macro_f1"
    assert sorted(r[2] for r in rows) == ["baseline", "train"]
    f1 = [float(r[-4]) for r in rows]  # test_macro_f1; a baseline's lr/epochs/max_len cells are blank
    assert f1 == sorted(f1, reverse=True) and f1[0] > 0.5

    assert main(["promote", *tracked, "--best", "test_macro_f1"]) == 0
    promoted = capsys.readouterr().out
    run_id = re.search(r"\(run (\w+)\)", promoted).group(1)
    assert promoted.startswith(f"models:/{MODEL}@champion -> version ") and run_id.startswith(rows[0][1])

    mlflow.set_tracking_uri(server)
    texts = [r["text"] for r in corpus[:12]]
    out = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion").predict(pd.DataFrame({"text": texts}))
    assert len(out) == len(texts) and {f"prob_{label}" for label in LABELS} <= set(out.columns)
    local = load_scorer(resolve_model_uri(f"runs:/{run_id}/model"))  # the promoted run's own model directory
    labels = list(local.labels.ids)
    assert out["label"].tolist() == [labels[i] for i in local.predict_proba(texts).argmax(1)]
    assert sum(out["label"] == [r["label"] for r in corpus[:12]]) >= 9  # it classifies, not just answers
