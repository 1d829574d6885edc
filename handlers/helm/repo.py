"""Charts from a classic HTTP helm repository (an ``index.yaml``): helm-chart-build's
``helm_repo_config`` and helm-chart-deploy's ``chart_source.repo``.

The contract's ``HelmRepoConfig{RepoURL, Chart, Version}`` has no credential fields, so basic auth
comes as the URL's userinfo (``https://user:pass@host/charts``). It is taken out of the URL and
written only into the job's 0600 repositories.yaml, which ``helm repo update`` and ``helm pull``
read: never argv, never a logged URL (the one logged and passed on has no userinfo).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

import yaml

from handlers.helm.cli import Helm, HelmFailed, error_line, write_private
from runner.sdk import HandlerError, JobLog, ProcessResult

#: The name the job's repositories.yaml gives the chart's repository.
REPO_NAME = "chart-source"


@dataclass(frozen=True)
class ChartRepo:
    url: str  # without credentials
    chart: str
    version: str = ""
    username: str = ""
    password: str = field(default="", repr=False)


def parse_repo(
    url: str, chart: str, version: str = "", *, username: str = "", password: str = ""
) -> ChartRepo:
    """Split credentials out of ``url``; explicit ``username``/``password`` win over userinfo."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise HandlerError("the chart repository URL must be an http(s) URL of a classic helm repository")
    if not chart.strip():
        raise HandlerError(f"no chart name for the repository {display_url(url)}")
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    clean = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), parts.query, ""))
    return ChartRepo(
        url=clean,
        chart=chart.strip(),
        version=version.strip(),
        username=username or unquote(parts.username or ""),
        password=password or unquote(parts.password or ""),
    )


def display_url(url: str) -> str:
    """``url`` without its userinfo, for messages."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))


def repositories_yaml(repo: ChartRepo) -> bytes:
    entry: dict[str, str] = {"name": REPO_NAME, "url": repo.url}
    if repo.username or repo.password:
        entry["username"] = repo.username
        entry["password"] = repo.password
    return yaml.safe_dump({"apiVersion": "v1", "repositories": [entry]}).encode()


def update_error(result: ProcessResult) -> str:
    """helm's reason (``failed to fetch .../index.yaml : 401 Unauthorized``) from either stream."""
    lines = (result.stdout or b"").decode(errors="replace").splitlines() + list(result.stderr_tail)
    for marker in ("failed to fetch", "Unable to get"):
        for line in lines:
            if marker in line:
                return line.strip()
    return error_line(result)


def _prepare(config: Path, repo: ChartRepo, dest: Path) -> None:
    write_private(config, repositories_yaml(repo))
    dest.mkdir(parents=True, exist_ok=True)


async def pull_chart(helm: Helm, repo: ChartRepo, dest: Path, *, log: JobLog) -> Path:
    """Fetch the repository's index and unpack ``chart`` (at ``version``, else the newest) into ``dest``."""
    _prepare(Path(helm.env["HELM_REPOSITORY_CONFIG"]), repo, dest)
    auth = " with basic auth" if repo.username or repo.password else ""
    log.info(f"chart {repo.chart} {repo.version or '(newest)'} from the helm repository {repo.url}{auth}")
    # helm 3 exits 0 when the update failed (its --fail-on-repo-update-fail is gone in helm 4, which
    # fails by default): the index in the cache is what tells.
    result = await helm.run(["repo", "update", REPO_NAME], capture=True, check=False)
    index = Path(helm.env["HELM_REPOSITORY_CACHE"]) / f"{REPO_NAME}-index.yaml"
    if result.returncode != 0 or not index.is_file():
        raise HelmFailed(
            f"helm repo update: the index of {repo.url} could not be fetched: {update_error(result)}"
        )
    args = ["pull", f"{REPO_NAME}/{repo.chart}", "--untar", "--untardir", str(dest)]
    if repo.version:
        args += ["--version", repo.version]
    await helm.run(args)
    chart_dir = dest / repo.chart
    if not (chart_dir / "Chart.yaml").is_file():
        raise HandlerError(f"helm pull {repo.chart} from {repo.url} unpacked no chart")
    return chart_dir
