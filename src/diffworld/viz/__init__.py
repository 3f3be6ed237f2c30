"""Watching the world model, what both products share of it: the play core (``play_core``), the key maps of
action spaces (``action_keymap``: an engine's dataset actions, a continuous-control agent's), the video loop
(``video_out``) and its side-by-side frames (``side_by_side``), the dataset browser and learning-curve plots.
Each product's play and video are in its package (``agent/play.py``, ``agent/video.py``, ``engine/play.py``,
``engine/video.py``).

The pygame, imageio and matplotlib parts need the ``viz`` extra (``pip install -e ".[viz]"``); they are
imported inside the functions that use them, so that the frame-making code of ``side_by_side`` (numpy,
OpenCV, torch only) can run during training without the extra: the trainer's test clip
(``agent.test_video``) is made by it.
"""
