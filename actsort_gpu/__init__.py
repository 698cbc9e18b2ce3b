"""actsort-gpu: active-learning curation of calcium-imaging cell-extraction outputs.

Data flows one way through a zarr *sort store* (see ``docs/store_schema.md``):
movie + extraction -> ingest -> preprocess -> features -> (embed) -> active learning -> export.
"""

__version__ = "0.1.0"

# Label codes, defined once for the whole package (docs/style.md).
CELL = 1
NOT_CELL = -1
UNLABELLED = 0
# Seen, but skipped for now (key U): journalled like a label, never a training label; the
# learner keeps it as unlabelled for the classifier and lists it in its "unsure" queue.
UNSURE = 2
