"""The data side of the kit: photos, labelme, label checks, RecordIO packing, previews."""
from labeling.errors import KitError

__all__ = ["KitError"]
