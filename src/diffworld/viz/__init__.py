"""Watching the world model: interactive play, the dataset browser, videos and learning-curve plots.

The pygame, imageio and matplotlib parts need the ``viz`` extra (``pip install -e ".[viz]"``); they are
imported inside the functions that use them, so that the frame-making code of ``video`` (numpy, OpenCV,
torch only) can run during training without the extra: the trainer's test clip (``training.test_video``) is
made by it.
"""
