"""deft6g.optim: AirComp receive beamforming, power control, device selection, PEFT budget allocation."""

import deft6g  # noqa: F401

from .aligned import align, best_single_direction, closed_form_design, mmse_receiver, mrc_direction, zf_direction
