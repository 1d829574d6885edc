"""``runner mng``: the supervisor of a runner workload on a VM (the reference's "mng" mode).

It is a runner of its own (own id and token) that serves the ``management`` group through the
same daemon as ``runner run`` (heartbeats, settings, journal), and keeps one runner workload
running beside it: ``runner run`` from a versioned virtualenv (process mode) or the runner image
under dockerd (container mode). The ``mng-*`` handlers (``handlers/mng``) reach it only through
the SDK's ``WorkloadSupervisor`` port.

Modules: ``policy`` (the pure decisions: restart, crash loop, versions, rollback), ``state``
(the state file that finds the workload again after a restart of mng), ``venvs`` (versioned
virtualenvs and the atomic switch), ``process`` and ``container`` (the two workloads),
``readiness`` (waiting for the workload's ``/readyz``), ``supervisor`` (keeps it running, the
operations), ``control`` (the port handed to jobs), ``app`` (wires it to the daemon).
"""
