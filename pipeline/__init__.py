"""Datasets and tf.data input pipelines for the rnnforge tasks (``rnnforge.pipeline``).

Importing this package loads nothing heavy: ``rnnforge.pipeline.sketch_rnn`` registers its TFDS
builder when it is imported, by the code that streams QuickDraw.
"""
