"""Typed plan models (docs/runner-api.md §9), decoded case-insensitively.

The control plane writes plans with Go's ``encoding/json``: several structs have no json tags,
so their keys are Go field names (``RegistryType``, ``WorkspaceID``), the swagger advertises
camelCase, and Go itself matches keys case-insensitively. ``PlanModel`` does the same: every
key is matched against the field names and aliases with case folded, and ``to_wire`` writes
the canonical spelling back.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import json
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class PlanError(ValueError):
    """A plan that cannot be decoded or is not valid for its job type."""


class PlanModel(BaseModel):
    # defer_build: validators are built when a plan of that type is first decoded, not at
    # import (every plan model of every family was built by importing this module).
    model_config = ConfigDict(extra="ignore", populate_by_name=True, defer_build=True)

    _folded: ClassVar[dict[str, str]]

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        folded: dict[str, str] = {}
        for name, info in cls.model_fields.items():
            canonical = info.alias or name
            folded[name.lower()] = canonical
            folded[canonical.lower()] = canonical
        cls._folded = folded

    @model_validator(mode="before")
    @classmethod
    def _fold_keys(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        out: dict[str, Any] = {}
        for key, value in data.items():
            canonical = cls._folded.get(str(key).lower(), key) if isinstance(key, str) else key
            # An exact spelling wins over a folded one when both are present.
            if canonical in out and key != canonical:
                continue
            out[canonical] = value
        return out

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


# --------------------------------------------------------------------------- shared objects


class OCIAuth(PlanModel):
    username: str = Field(default="", alias="Username")
    password: str = Field(default="", alias="Password")


class AWSStaticCredentials(PlanModel):
    access_key_id: str = ""
    secret_access_key: str = ""
    session_token: str = ""


class AWSTwoStepConfig(PlanModel):
    iam_role_arn: str = ""
    src_static_credentials: AWSStaticCredentials | None = None
    src_iam_role_arn: str = ""


class AWSAssumeRole(PlanModel):
    role_arn: str = ""
    session_name: str = ""
    session_duration_seconds: int = 0
    two_step_config: AWSTwoStepConfig | None = None
    use_github_oidc: bool = False


class AWSAuth(PlanModel):
    static: AWSStaticCredentials | None = None
    assume_role: AWSAssumeRole | None = None
    profile: str = ""
    use_default: bool = False
    cache_id: str = ""
    region: str = ""


class AzureServicePrincipal(PlanModel):
    subscription_id: str = ""
    subscription_tenant_id: str = ""


class AzureAuth(PlanModel):
    service_principal: AzureServicePrincipal | None = None
    use_default: bool = False


class OCIRegistryRepository(PlanModel):
    plugin: str = Field(default="", alias="Plugin")
    registry_type: str = Field(default="", alias="RegistryType")
    region: str = Field(default="", alias="Region")
    ecr_auth: AWSAuth | None = Field(default=None, alias="ECRAuth")
    acr_auth: AzureAuth | None = Field(default=None, alias="ACRAuth")
    oci_auth: OCIAuth | None = Field(default=None, alias="OCIAuth")
    repository: str = Field(default="", alias="Repository")
    login_server: str = Field(default="", alias="LoginServer")


class ClusterInfo(PlanModel):
    id: str = ""
    endpoint: str = ""
    ca_data: str = ""
    env_vars: dict[str, str] | None = None
    kube_config: str = ""
    aws_auth: AWSAuth | None = None
    azure_auth: AzureAuth | None = None
    inline: bool = False
    trusted_role_arn: str = ""


class GitSource(PlanModel):
    url: str = ""
    ref: str = ""
    path: str = ""
    recurse_submodules: bool = False


class LocalArchive(PlanModel):
    local_archive: str = ""


class SandboxModeTerraform(PlanModel):
    state_json: str = ""
    workspace_id: str = ""
    plan_contents: str = ""
    plan_display_contents: str = ""


class SandboxModePlanContents(PlanModel):
    plan_contents: str = ""
    plan_display_contents: str = ""


class SandboxMode(PlanModel):
    enabled: bool = False
    outputs: dict[str, Any] | None = None
    terraform: SandboxModeTerraform | None = None
    helm: SandboxModePlanContents | None = None
    kubernetes_manifest: SandboxModePlanContents | None = None


class TerraformBackend(PlanModel):
    workspace_id: str = Field(default="", alias="WorkspaceID")


class TerraformHooks(PlanModel):
    enabled: bool = Field(default=False, alias="Enabled")
    env_vars: dict[str, str] | None = Field(default=None, alias="EnvVars")
    run_auth: AWSAuth | None = Field(default=None, alias="RunAuth")


class BasePlan(PlanModel):
    sandbox_mode: SandboxMode | None = None


# --------------------------------------------------------------------------- per job family


class HelmRepoConfig(PlanModel):
    repo_url: str = Field(default="", alias="RepoURL")
    chart: str = Field(default="", alias="Chart")
    version: str = Field(default="", alias="Version")


class HelmBuildPlan(PlanModel):
    labels: dict[str, str] | None = Field(default=None, alias="Labels")
    helm_repo_config: HelmRepoConfig | None = Field(default=None, alias="HelmRepoConfig")


class TerraformBuildPlan(PlanModel):
    labels: dict[str, str] | None = Field(default=None, alias="Labels")


class DockerBuildPlan(PlanModel):
    build_args: dict[str, str | None] | None = None
    target: str = ""
    context: str = ""
    dockerfile: str = ""
    #: Ours: image labels (ours win over these), and BuildKit secrets by id (secret mounts only).
    labels: dict[str, str] | None = Field(default=None, alias="Labels")
    secrets: dict[str, str] | None = None


class FetchImageMetadataPlan(BasePlan):
    """``fetch-image-metadata`` (named by the newer API, defined by us: docs/docker-build.md)."""

    registry: OCIRegistryRepository | None = Field(default=None, alias="Registry")
    tag: str = Field(default="", alias="Tag")
    include_index: bool = Field(default=True, alias="IncludeIndex")
    include_attestation_manifests: bool = Field(default=False, alias="IncludeAttestationManifests")
    include_attestation_layers: bool = Field(default=False, alias="IncludeAttestationLayers")


class ContainerImagePullPlan(PlanModel):
    image: str = ""
    tag: str = ""
    repo_config: OCIRegistryRepository | None = None


class BuildPlan(BasePlan):
    component_id: str = ""
    component_build_id: str = ""
    git_source: GitSource | None = None
    dst_registry: OCIRegistryRepository | None = None
    dst_tag: str = ""
    helm_build_plan: HelmBuildPlan | None = None
    terraform_build_plan: TerraformBuildPlan | None = None
    docker_build_plan: DockerBuildPlan | None = None
    container_image_pull_plan: ContainerImagePullPlan | None = None


class SyncOCIPlan(BasePlan):
    src_registry: OCIRegistryRepository | None = None
    src_tag: str = ""
    dst_registry: OCIRegistryRepository | None = None
    dst_tag: str = ""


class HelmValue(PlanModel):
    name: str = ""
    value: str = ""
    type: str = ""


class HelmDeployPlan(PlanModel):
    cluster_info: ClusterInfo | None = None
    name: str = ""
    namespace: str = ""
    create_namespace: bool = False
    storage_driver: str = ""
    helm_chart_id: str = ""
    values_files: list[str] | None = None
    values: list[HelmValue] | None = None
    take_ownership: bool = False
    #: Ours: the helm version when the app config names none (``runner exec``, tests).
    helm_version: str = ""
    #: Ours, for ``runner exec``: a chart from ``{git: GitSource}``, ``{oci: {ref, version}}`` or
    #: ``{repo: {url, chart, version, username, password}}`` instead of ``src_registry:src_tag``
    #: (validated by handlers/helm/chart_source.py).
    chart_source: dict[str, Any] | None = None


class TerraformDeployPlan(PlanModel):
    vars: dict[str, Any] | None = None
    env_vars: dict[str, str] | None = None
    vars_files: list[str] | None = None
    terraform_backend: TerraformBackend | None = None
    azure_auth: AzureAuth | None = None
    aws_auth: AWSAuth | None = None
    hooks: TerraformHooks | None = None
    cluster_info: ClusterInfo | None = None
    policies: dict[str, str] | None = None
    state: Any = None
    plan_json: Any = None
    #: Ours: the terraform version when no app config is reachable (``runner exec``).
    terraform_version: str = ""


class KubernetesManifestDeployPlan(PlanModel):
    cluster_info: ClusterInfo | None = None
    namespace: str = ""
    manifest: str = ""


class JobDeployPlan(PlanModel):
    """A ``job`` component's deploy (ours, docs/kubernetes.md "job-deploy"): the image run as a Job."""

    cluster_info: ClusterInfo | None = None
    namespace: str = ""
    image_url: str = ""
    tag: str = ""
    cmd: list[str] | None = None
    args: list[str] | None = None
    env_vars: dict[str, str] | None = None
    backoff_limit: int = 0


class DeployPlan(BasePlan):
    install_id: str = ""
    app_id: str = ""
    app_config_id: str = ""
    component_id: str = ""
    component_name: str = ""
    src_registry: OCIRegistryRepository | None = None
    src_tag: str = ""
    helm: HelmDeployPlan | None = None
    terraform: TerraformDeployPlan | None = None
    kubernetes_manifest: KubernetesManifestDeployPlan | None = None
    job: JobDeployPlan | None = None
    noop: dict[str, Any] | None = None
    apply_plan_contents: str = ""
    apply_plan_display: Any = None


class SandboxRunPlan(BasePlan):
    install_id: str = ""
    app_id: str = ""
    app_config_id: str = ""
    vars: dict[str, Any] | None = None
    env_vars: dict[str, str] | None = None
    vars_files: list[str] | None = None
    git_source: GitSource | None = None
    local_archive: LocalArchive | None = None
    terraform_backend: TerraformBackend | None = None
    azure_auth: AzureAuth | None = None
    aws_auth: AWSAuth | None = None
    hooks: TerraformHooks | None = None
    policies: dict[str, str] | None = None
    state: Any = None
    apply_plan_contents: str = ""
    apply_plan_display: Any = None
    #: Ours: the terraform version when no app config is reachable (``runner exec``).
    terraform_version: str = ""


class ActionStep(PlanModel):
    run_id: str = ""
    attrs: dict[str, str | None] | None = None
    interpolated_env_vars: dict[str, str] | None = None
    git_source: GitSource | None = None
    interpolated_inline_contents: str = ""
    interpolated_command: str = ""


class ActionWorkflowRunPlan(BasePlan):
    id: str = ""
    install_id: str = ""
    attrs: dict[str, str | None] | None = None
    steps: list[ActionStep] | None = None
    builtin_env_vars: dict[str, str] | None = None
    override_env_vars: dict[str, str] | None = None
    cluster_info: ClusterInfo | None = None
    aws_auth: AWSAuth | None = None
    #: Ours (the contract's action plan has none): the runner's Azure identity for the steps.
    azure_auth: AzureAuth | None = None


class KubernetesSecret(PlanModel):
    secret_arn: str = ""
    secret_name: str = ""
    namespace: str = ""
    name: str = ""
    key_name: str = ""
    format: str = ""


class SyncSecretsPlan(BasePlan):
    kubernetes_secrets: list[KubernetesSecret] | None = None
    cluster_info: ClusterInfo | None = None
    azure_auth: AzureAuth | None = None
    aws_auth: AWSAuth | None = None


class EmptyPlan(BasePlan):
    """Jobs without a plan (noop, health-check, shut-down…): anything goes, ``sandbox_mode`` is read."""


def plan_model_for(job_type: str) -> type[BasePlan]:
    """The job type's plan model, from the one job-type table (``runner.api.jobtypes``)."""
    from runner.api.jobtypes import plan_model_for as from_table

    return from_table(job_type)


def decode_plan(job_type: str, text: str | bytes | None, model: type[BasePlan] | None = None) -> BasePlan:
    """Decode the text body of ``GET …/plan`` into the plan model of ``job_type``.

    An empty body decodes to the model's defaults (jobs without a plan); anything that is not
    a JSON object, or does not fit the model, raises ``PlanError`` with a message that says where.
    """
    model = model or plan_model_for(job_type)
    if text is None or (isinstance(text, str | bytes) and not text.strip()):
        return model()
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PlanError(f"plan is not valid JSON: {exc}") from exc
    if data is None:
        return model()
    if not isinstance(data, dict):
        raise PlanError(f"plan must be a JSON object, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "(root)"
        raise PlanError(
            f"plan does not fit {model.__name__}: {where}: {first.get('msg')} ({exc.error_count()} error(s))"
        ) from exc


# --------------------------------------------------------------------------- plan contents codec


def b64url(data: bytes) -> str:
    """Padded base64-URL, which the server decodes with Go's ``base64.URLEncoding``."""
    return base64.urlsafe_b64encode(data).decode("ascii")


def encode_plan_result(raw: bytes, display_json: bytes) -> dict[str, str]:
    """The two compressed fields of a plan result (docs/runner-api.md §7.5).

    ``raw`` goes as is (terraform's tfplan is a zip already; helm and kubernetes pass gzip(JSON));
    ``display_json`` is gzipped here.
    """
    return {
        "contents_compressed": b64url(raw),
        "contents_display_compressed": b64url(gzip.compress(display_json, mtime=0)),
    }


def decode_any_base64(text: str) -> bytes:
    """Decode URL, std or unpadded base64, as the reference's DecompressPlan tolerates."""
    cleaned = text.strip()
    padded = cleaned + "=" * (-len(cleaned) % 4)
    for decoder in (base64.urlsafe_b64decode, base64.standard_b64decode):
        try:
            return decoder(padded.encode("ascii"))
        except (binascii.Error, ValueError):
            continue
    raise PlanError("apply_plan_contents is not base64")


def decode_apply_plan_contents(text: str) -> bytes:
    """``apply_plan_contents`` of an apply job: base64-std of the plan job's raw bytes."""
    if not text:
        raise PlanError("apply_plan_contents is empty: an apply-plan job needs the plan job's result")
    try:
        return base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        return decode_any_base64(text)
