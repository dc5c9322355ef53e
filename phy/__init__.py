"""deft6g.phy: Sionna link-level models -- fading channels, MIMO AirComp, the digital baseline, D2D."""

import deft6g  # noqa: F401  (sets the TensorFlow environment before TensorFlow is imported)

from .aircomp import aircomp_channel_uses, aircomp_estimate, aircomp_mse, effective_gains
from .aircomp_uplink import AirCompUplink
from .obda import OBDAResult, OBDAUplink
from .control_link import CONTROL_TABLE, FACTOR_BITS, GRANT_BITS, MAX_CONTROL_REPETITION, STATS_BITS, ControlLink, \
    ControlResult, pilot_channel_uses
from .channels import CHANNEL_MODELS, DROP_MODELS, FLAT_MODELS, FadingChannel, db_to_linear, imperfect_csi, \
    log_distance_gain_db, noise_var
from .payload import pack, payload_correlation, standardise, unpack
from .d2d import D2DLink
from .prompt_link import PromptLink, PromptLinkResult
from .block_codec import BlockCodec
from .mcs import MCS_TABLE, Mcs, calibrate_mcs, effective_sinr, select_mcs
from .mu_mimo import DETECTORS, balanced_groups, channel_aware_groups, equalize, mismatched_sinr, post_detection_sinr
from .digital_link import DigitalLink, LinkResult
from .digital_uplink import LINK_MODELS, DigitalUplink, UplinkResult
from .quantizer import ErrorFeedback, Quantizer
from .error_rates import ErrorRates, error_rate
from .montecarlo import complex_normal, empirical_mse
from .impairments import PilotCsi, TransmitMisalignment, pilot_error_var
