"""What the bundles under ``bundles/`` share: paths, dataset preparation, transform pipelines, evaluation reports.

Bundle configs refer to these by dotted path (``monai_embedseg.bundle.pipelines.train_transforms``) so that each
``configs/*.json`` holds configuration only.
"""
