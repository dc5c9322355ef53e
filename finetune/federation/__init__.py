"""Federated DEFT (technique 3): devices tune PEFT weights, their updates cross the uplink, the server
aggregates them and steps a server optimiser; devices may hold a compressed FoMo emulator.

- federated: `FederatedDEFT`, the federated training loop (emulators, split fine-tuning, partial participation)
- aggregation: how the updates reach the server (ideal, MIMO AirComp, digital, OBDA; the Gaussian-noise control)
- server_optimizers: FedAvg and FedAdam on the server
- emulator: layer-dropped FoMo emulators and plugging their PEFT weights back into the full model
- emulator_package: what a server sends (vocabulary pruning, int8, low rank) and its download size
- distillation: aligning an emulator's middle blocks to the full model on public text
- emulator_builder: one construction of the emulators, shared by `deft6g emulator` and `deft6g study`
"""
