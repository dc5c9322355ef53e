"""A Flower app whose FedAvg average crosses deft6g's MIMO AirComp uplink (examples/flower-aircomp/README.md)."""
