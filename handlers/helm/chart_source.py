"""helm-chart-deploy's chart from ``helm.chart_source`` (ours, for ``runner exec``) instead of the
contract's ``src_registry:src_tag`` artifact: a chart directory in git, an ``oci://`` chart, or a
chart of a classic HTTP repository. Credentials go only into the job's 0600 registry or
repository config (handlers/helm/cli.py), never argv.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from handlers.helm.cli import Helm, registry_config, write_private
from handlers.helm.repo import parse_repo, pull_chart
from handlers.sources import fetch_job_source
from runner.sdk import HandlerError, JobContext
from runner.sdk.plans import GitSource


class OCIChart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ref: str  # oci://host/repository/chart
    version: str = ""
    username: str = ""
    password: str = Field(default="", repr=False)
    plain_http: bool = False


class RepoChart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str
    chart: str
    version: str = ""
    username: str = ""
    password: str = Field(default="", repr=False)


class ChartSource(BaseModel):
    model_config = ConfigDict(extra="forbid")
    git: GitSource | None = None
    oci: OCIChart | None = None
    repo: RepoChart | None = None


def parse_chart_source(raw: dict[str, Any]) -> ChartSource:
    """Exactly one of git, oci, repo; anything else fails before helm runs."""
    try:
        source = ChartSource.model_validate(raw)
    except ValidationError as exc:
        fields = ", ".join(".".join(str(p) for p in e["loc"]) + f": {e['msg']}" for e in exc.errors())
        raise HandlerError(f"helm.chart_source is not valid ({fields})") from None
    given = [k for k in ("git", "oci", "repo") if getattr(source, k) is not None]
    if len(given) != 1:
        raise HandlerError("helm.chart_source names exactly one of git, oci, repo")
    if source.oci is not None and not source.oci.ref.startswith("oci://"):
        raise HandlerError("helm.chart_source.oci.ref must start with oci://")
    if source.git is not None and not source.git.url:
        raise HandlerError("helm.chart_source.git has no url")
    return source


async def chart_from_source(ctx: JobContext, helm: Helm, raw: dict[str, Any]) -> Path:
    """The chart (a directory) ``helm upgrade`` is given."""
    source = parse_chart_source(raw)
    dest = ctx.workspace / "chart-source"
    if source.git is not None:
        fetched = await fetch_job_source(ctx, source.git, dest_name="chart-source")
        return fetched.directory
    if source.repo is not None:
        repo = parse_repo(
            source.repo.url,
            source.repo.chart,
            source.repo.version,
            username=source.repo.username,
            password=source.repo.password,
        )
        return await pull_chart(helm, repo, dest, log=ctx.log)
    assert source.oci is not None
    return await _pull_oci(ctx, helm, source.oci, dest)


def _registry_auth(helm: Helm, oci: OCIChart) -> None:
    host = urlsplit(oci.ref.replace("oci://", "https://", 1)).netloc
    auths = {host: (oci.username, oci.password)} if oci.username or oci.password else {}
    write_private(Path(helm.env["HELM_REGISTRY_CONFIG"]), registry_config(auths))


async def _pull_oci(ctx: JobContext, helm: Helm, oci: OCIChart, dest: Path) -> Path:
    _registry_auth(helm, oci)
    ctx.log.info(f"chart {oci.ref} {oci.version or '(newest)'}")
    args = ["pull", oci.ref, "--untar", "--untardir", str(dest)]
    if oci.version:
        args += ["--version", oci.version]
    if oci.plain_http:
        args.append("--plain-http")
    await helm.run(args)
    chart_dir = dest / oci.ref.rstrip("/").rsplit("/", 1)[-1]
    if not (chart_dir / "Chart.yaml").is_file():
        raise HandlerError(f"helm pull {oci.ref} unpacked no chart")
    return chart_dir
