"""Fixtures the conformance transcripts share with the tiers whose job types they record.

Imported, not copied, so each is the tier's own (dockerd and its busybox base image, the kube
apiserver, moto as STS and Secrets Manager, mng's locally built versions); each keeps failing in
CI when its service is missing.
"""

from __future__ import annotations

from tests.common.conftest import recording_sts, sts  # noqa: F401
from tests.docker.conftest import docker_env  # noqa: F401
from tests.kube.conftest import kube_cluster  # noqa: F401
from tests.mng.conftest import mng_cp, mng_factory, mng_versions  # noqa: F401
