"""Container image builds (``docker-build``) and image inspection (``fetch-image-metadata``).

``docker-build`` builds a plan's Dockerfile from the job's git checkout with a local builder,
dockerd (reached through ``DOCKER_HOST``: a DinD sidecar in a pod, the host socket on a VM) or
daemonless podman (vfs storage, chroot isolation: it works unprivileged inside a container),
and pushes the image to the plan's ``dst_registry``. ``fetch-image-metadata`` reads an image's
manifest, config, labels, digest and platforms from a registry through ``handlers.oci`` with no
builder at all. See docs/docker-build.md.

Modules: ``settings`` (``RUNNER_DOCKER_*``), ``paths`` (context and Dockerfile inside the
workspace), ``buildargs`` (build args, labels, secrets: pure), ``builder`` (which builder, and
its command lines through python-on-whales), ``output`` (build output into the job log, the
failure message), ``auth`` (the push credentials file), ``build`` and ``metadata`` (handlers).
"""
