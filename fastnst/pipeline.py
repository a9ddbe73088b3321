"""Deprecated: the photo-library pipeline moved to ``fastnst.stylize`` (kept for one release).

``from fastnst.pipeline import stylize_files`` still works, with a
``DeprecationWarning``; import it from ``fastnst.stylize`` (or ``fastnst``).
"""

import warnings

from fastnst.stylize import StylizeReport, stylize_files

__all__ = ["StylizeReport", "stylize_files"]
warnings.warn("fastnst.pipeline is deprecated: import stylize_files from fastnst.stylize",
              DeprecationWarning, stacklevel=2)
