"""Training and evaluation of POSTER V2.

options: TrainOptions, every setting of a run (no torch); loop: `train(options)`, the whole run;
data: the run's splits; steps: one training step, one epoch, evaluation, data loaders, autocast;
evaluation: `evaluate_checkpoint`, a trained model's accuracy on a split (`poster-fast
evaluate`); sam: the SAM optimiser; distributed: torchrun process groups; metrics: accuracy,
confusion, the per-epoch CSV; plots: training curves and confusion matrices; record: what a run
records about itself.
"""
