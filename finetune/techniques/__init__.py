"""The other DEFT techniques: neural connections over the air on multi-view data (technique 2), on-the-fly
prompt ensembles (technique 4) and device-to-device prompt transfer (technique 5).

- aircomp_connection: the sum of M devices' projections delivered by AirComp, digital or ideal connections
- multiview: multi-view text tasks (each device sees one segment of an example) and their cached features
- multiview_model: the split multi-view classifier (device projections, a connection, a server head)
- prompt_pool: a pool of soft prompts under a memory budget and its batched forward pass
- prompt_ensemble: on-the-fly prompt-ensemble tuning over a stream of chunks
- prompt_transfer: initialising a device's soft prompt from a neighbour's (SPoT)
"""
