"""Model families. Importing this package registers all of them with timm."""

from .biformer import *  # noqa: F401,F403
from .davit import *  # noqa: F401,F403
from .efficientvit_msra import *  # noqa: F401,F403
from .focalnet import *  # noqa: F401,F403
from .halonet import *  # noqa: F401,F403
from .litv2 import *  # noqa: F401,F403
from .transnext import *  # noqa: F401,F403
