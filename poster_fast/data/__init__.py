"""Data for training, evaluation and prediction.

labels: the datasets' label tables, training recipes and class-name resolution (no torch);
images: reading image files and walking folders; transforms: the training and evaluation
transforms; datasets: the ImageFolder dataset and split folders; sampler: class-balanced
sampling across DDP ranks.
"""
