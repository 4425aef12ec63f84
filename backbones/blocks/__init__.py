"""Token mixers and other blocks shared by the model families (one module per idea)."""

from .ablation_mixers import DecoupledAttention, LinearAttention, SigmoidAttention, StaticMixer  # noqa: F401
from .agent_attention import AgentAttention  # noqa: F401
from .aggregated_attention import AggregatedAttention, LengthScaledAttention  # noqa: F401
from .baseline_mixers import DWConvMixer, GlobalAttention, PoolMixer  # noqa: F401
from .bilevel_routing_attention import BiLevelRoutingAttention  # noqa: F401
from .cascaded_group_attention import CascadedGroupAttention, LocalWindowAttention  # noqa: F401
from .channel_attention import ChannelAttention  # noqa: F401
from .conv_ffn import ConvFFN  # noqa: F401
from .conv_glu import ConvGLU  # noqa: F401
from .conv_norm import ConvNorm, NormLinear  # noqa: F401
from .conv_pos_enc import ConvPosEnc  # noqa: F401
from .deformable_token_merging import DeformableConv2d, DeformableTokenMerging  # noqa: F401
from .focal_modulation import FocalModulation  # noqa: F401
from .halo_attention import HaloAttention  # noqa: F401
from .head_mixture import HeadMixture  # noqa: F401
from .hilo_attention import HiLoAttention  # noqa: F401
from .mixer_registry import ChannelsFirstMixer, create_mixer, list_mixers, mixer_info, register_mixer  # noqa: F401
from .rank_augmented_attention import RankAugmentedLinearAttention, RoPEGatedAttention  # noqa: F401
from .shifted_window_attention import ShiftedWindowAttention  # noqa: F401
from .window_attention import WindowAttention  # noqa: F401
