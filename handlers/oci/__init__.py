"""OCI registry support: a streaming async registry client, image-graph copy, OCI artifacts,
and the ``oci-sync`` / ``container-image-build`` handlers.

Built on httpx rather than oras-py: oras-py cannot copy an image graph, is synchronous
(requests) and buffers blobs in memory, while a runner must stream multi-gigabyte layers with
flat memory, copy blobs concurrently and cancel cleanly inside anyio task groups.

Public entry points for other handlers: :func:`handlers.oci.registry.open_registry`,
:class:`handlers.oci.registry.RegistryTarget`, :func:`handlers.oci.artifacts.push_directory`
and :func:`handlers.oci.artifacts.pull_directory`.
"""
