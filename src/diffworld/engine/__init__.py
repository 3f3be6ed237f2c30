"""The neural game engine (DIAMOND's CS:GO mode): a diffusion world model trained on a static dataset of
recorded play, and played interactively.

Data flows ``actions`` -> ``dataset`` (the on-disk format) -> ``sampler`` (training segments) -> the models
and their trainer; ``convert`` makes datasets from diffworld runs, recordings, Gymnasium environments and the
official CS:GO files. docs/engine.md is the user's guide. Import the modules themselves: this package
imports nothing, so that dataset tools do not load torch.
"""
