"""The neural game engine (DIAMOND's CS:GO mode): a diffusion world model trained on a static dataset of
recorded play, and played interactively.

Data flows from the shared core's dataset format (``data/folder_store.py``, with its action spaces,
``data/actions.py``) through ``segment_sampler`` (training segments at the engine's low resolution) to the
models (``denoiser``: the world model's facades) and their ``trainer``; ``convert`` makes datasets from
diffworld runs, recordings, Gymnasium environments and the official CS:GO files. docs/engine.md is the
user's guide. Import the modules themselves: this package imports nothing, so that dataset tools do not load
torch.
"""
