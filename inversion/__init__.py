"""Real-photo inversion for DragGAN Studio: photo -> aligned face -> pivot latent + tuned generator.

    from inversion import invert
    result = invert("photo.jpg", G)      # G: draggan.models.networks.Generator (left untouched)
    result.ws, result.generator          # hand these to the drag engine
    result.transfer(after, handles, targets)   # a drag's edit on the photo's own pixels (motion transfer)
    result.paste_back(edited)            # the edited square, pasted back into the original photo
    edit = PhotoEdit.from_inversion(result)    # one edit: points in photo pixels, drags, undo, the edited photo
    drag_photo(result, handles, targets).image  # drag and transfer in one call

See pipeline.invert for the report's contents, InversionConfig for every setting,
motion_transfer for how an edit reaches the photo and edit for PhotoEdit.
"""

from .align import Alignment, FaceTemplate
from .edit import PhotoEdit, PhotoView, drag_photo
from .errors import Cancelled, InversionError, PhotoError
from .motion_transfer import TransferResult, transfer_edit
from .photo import read_photo
from .pipeline import DEFAULT_CACHE, InversionCache, InversionConfig, InversionResult, alignment_for_model, invert

__all__ = ["invert", "InversionConfig", "InversionResult", "InversionCache", "DEFAULT_CACHE", "PhotoError",
           "Cancelled", "InversionError", "Alignment", "FaceTemplate", "read_photo", "alignment_for_model",
           "PhotoEdit", "PhotoView", "TransferResult", "transfer_edit", "drag_photo"]
