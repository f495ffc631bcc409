"""What the bundles under ``bundles/`` share: paths, dataset preparation, pipeline helpers, the config generator.

Bundle configs refer to these by dotted path (``monai_embedseg.bundle.datasets.prepare_properties``) so that each
``configs/*.json`` holds configuration only. The configs themselves are generated from ``template/`` and one recipe
per bundle (``recipes/<name>.json``) by ``python -m monai_embedseg.bundle.generate``.
"""
