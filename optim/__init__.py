"""deft6g.optim: AirComp receive beamforming, power control, device selection, PEFT budget allocation.

Every result carries a `status` under one policy, written in `deft6g.optim.solver_status`.
"""

import deft6g  # noqa: F401

from .aligned import align, best_single_direction, closed_form_design, mmse_receiver, mrc_direction, zf_direction
from .solver_status import Solve, compiled_per_shape, installed, solve_in_order
from .design import ALIGNED, METHODS, AirCompDesign, best_aligned, best_threshold_b, design_aircomp, round_sdr, \
    sdr_design
from .zf_sdr import SdrSolution, ZfSdr, candidate_directions, dual_bound, real_form
from .sdr_barrier import sdr_barrier
from .power_control import optimal_denoising, power_control
from .selection import SELECTORS, DcPrograms, Selection, select_devices
from .zf_sca import zf_sca
from .peft_allocation import Allocation, PeftAllocator
from .truncated_inversion import BUDGETS, best_truncation_threshold, participation_probability, truncated_inversion, \
    truncation_mse
from .subcarrier_power import SubcarrierDesign, SubcarrierPower, allocate_subcarrier_power, uniform_subcarrier_power
from .task_oriented import TaskOrientedDesign, power_split, task_oriented_design
