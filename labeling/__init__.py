"""The data side of the kit: photos, labelme, label checks, RecordIO packing, previews."""
from hackathon.core.errors import KitError

__all__ = ["KitError"]
