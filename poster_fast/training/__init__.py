"""Training and evaluation of POSTER V2.

options: TrainOptions, every setting of a run (no torch); loop: `train(options)`, the whole run;
steps: one training step, one epoch, evaluation, data loaders, autocast; sam: the SAM optimiser;
distributed: torchrun process groups; metrics: accuracy, confusion, the per-epoch CSV; plots:
training curves and confusion matrices.
"""
