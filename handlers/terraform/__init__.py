"""The terraform job family: module builds, deploys and sandbox runs (issue 5).

``binary`` finds or downloads the terraform version a job asks for; ``workspace`` lays out the
module, variables and credentials; ``backend_proxy`` keeps the runner token out of terraform's
reach; ``cli`` runs terraform and turns its ``-json`` output into log records and error
summaries; ``operations`` is the plan/apply pipeline shared by ``deploy`` and ``sandbox``.
"""
