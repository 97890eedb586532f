"""Inference with a trained model.

classifier: the one place a model is loaded for inference (checkpoint, class names, device,
eval mode); photos: photos -> faces -> batched crops -> class probabilities; outputs: the
JSON, CSV, table and annotated-photo writers of `poster-fast predict`.
"""
