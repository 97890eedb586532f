"""Inference with a trained model.

classifier: the one place a model is loaded for inference (checkpoint, class names, device,
precision); crops: face crops -> class probabilities, in batches; video: frames -> the same
batches; predict: photos and videos -> faces -> class probabilities (`predict_files`); outputs:
the JSON, CSV, table and annotated photos and videos of `poster-fast predict`.
"""
