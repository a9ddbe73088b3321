"""Deprecated: the stylization engine moved to ``fastnst.stylize`` (kept for one release).

``from fastnst.engine import Stylizer, StylizeConfig`` still works, with a
``DeprecationWarning``; import them from ``fastnst.stylize`` (or ``fastnst``).
"""

import warnings

from fastnst.stylize import StylizeConfig, Stylizer

__all__ = ["StylizeConfig", "Stylizer"]
warnings.warn("fastnst.engine is deprecated: import Stylizer and StylizeConfig from fastnst.stylize",
              DeprecationWarning, stacklevel=2)
