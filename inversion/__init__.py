"""Real-photo inversion for DragGAN Studio: photo -> aligned face -> pivot latent + tuned generator.

    from inversion import invert
    result = invert("photo.jpg", G)      # G: draggan.networks.Generator (left untouched)
    result.ws, result.generator          # hand these to the drag engine
    result.paste_back(edited)            # the edited square, back in the original photo

See pipeline.invert for the report's contents and InversionConfig for every setting.
"""

from .align import Alignment, FaceTemplate
from .errors import Cancelled, InversionError, PhotoError
from .pipeline import DEFAULT_CACHE, InversionCache, InversionConfig, InversionResult, alignment_for_model, invert
from .photo import read_photo

__all__ = ["invert", "InversionConfig", "InversionResult", "InversionCache", "DEFAULT_CACHE", "PhotoError",
           "Cancelled", "InversionError", "Alignment", "FaceTemplate", "read_photo", "alignment_for_model"]
