"""Server optimisers of federated DEFT (Reddi et al., "Adaptive federated optimization", ICLR 2021): the
server treats the aggregated update Delta (the weighted mean of the devices' trained-minus-start payloads, as
the link delivered it) as a negated pseudo-gradient and steps the global payload x [L] float32 with it.

`FederatedDEFT` takes a name of SERVER_OPTIMIZERS (built with its server_lr) or any object with
step(x, delta) -> new x and reset(), as FedJAX takes its server optimiser.
"""

import numpy as np


class FedAvgServer:
    """x <- x + lr * Delta (lr = 1: plain FedAvg)."""

    def __init__(self, lr=1.0):
        if not lr > 0:
            raise ValueError(f"`lr` must be > 0, got {lr!r}")
        self.lr = lr

    def step(self, x, delta):
        return x + self.lr * delta

    def reset(self):
        """No state."""


class FedAdamServer:
    """FedAdam (Reddi et al. 2021, Algorithm 2, without bias correction): m <- beta1 m + (1 - beta1) Delta,
    v <- beta2 v + (1 - beta2) Delta^2, x <- x + lr m / (sqrt(v) + tau); m and v start at zero on the first
    step (and after reset()). Defaults: the paper's beta1 0.9, beta2 0.99, adaptivity tau 1e-3."""

    def __init__(self, lr=1.0, beta1=0.9, beta2=0.99, tau=1e-3):
        for name, value, ok in (("lr", lr, lr > 0), ("beta1", beta1, 0 <= beta1 < 1),
                                ("beta2", beta2, 0 <= beta2 < 1), ("tau", tau, tau > 0)):
            if not ok:
                raise ValueError(f"`{name}` out of range, got {value!r} (lr > 0, beta in [0, 1), tau > 0)")
        self.lr, self.beta1, self.beta2, self.tau = lr, beta1, beta2, tau
        self.reset()

    def step(self, x, delta):
        if self.m is None:
            self.m, self.v = np.zeros_like(delta), np.zeros_like(delta)
        self.m = self.beta1 * self.m + (1 - self.beta1) * delta
        self.v = self.beta2 * self.v + (1 - self.beta2) * delta ** 2
        return (x + self.lr * self.m / (np.sqrt(self.v) + self.tau)).astype(np.float32)

    def reset(self):
        """Forget the moments."""
        self.m = self.v = None


SERVER_OPTIMIZERS = {"fedavg": FedAvgServer, "fedadam": FedAdamServer}
"""Server optimiser name -> class (built with the server learning rate as `lr`)."""
