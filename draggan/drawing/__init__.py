"""Drawing: the editor's view with points, arrows and mask (``overlay``), and videos of a drag (``video``)."""
