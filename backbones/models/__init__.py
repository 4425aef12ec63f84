"""Model families. Importing this package registers all of them with timm."""

from .agent_pvt import *  # noqa: F401,F403
from .agent_swin import *  # noqa: F401,F403
from .biformer import *  # noqa: F401,F403
from .davit import *  # noqa: F401,F403
from .efficientvit_msra import *  # noqa: F401,F403
from .focalnet import *  # noqa: F401,F403
from .halonet import *  # noqa: F401,F403
from .hybrid import *  # noqa: F401,F403
from .litv2 import *  # noqa: F401,F403
from .moh_transnext import *  # noqa: F401,F403
from .ravlt import *  # noqa: F401,F403
from .transnext import *  # noqa: F401,F403

# Each family exports its own checkpoint_filter_fn; a package-level name would be whichever family came last.
# Use backbones.load_checkpoint(model, ...) or backbones.models.<family>.checkpoint_filter_fn.
del checkpoint_filter_fn  # noqa: F821
